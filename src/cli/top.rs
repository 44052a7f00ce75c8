//! `wsbridge top`: a live view of a running daemon, read from its `/status` every second. On
//! a terminal it is a full-screen table (ratatui over crossterm) that `q` quits; otherwise the
//! same rows are printed as plain text at each refresh, for logs and pipes.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};
use ratatui::Frame;

use wsbridge::metrics::Status;
use wsbridge::status_client::fetch_status;
use wsbridge::top::{rows, Rows, SINK_COLUMNS, UPSTREAM_COLUMNS};

use super::process::current_thread_runtime;

/// How often the daemon is asked.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs until `q` (a terminal) or until stdout is closed (plain rows).
pub(super) fn run(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let runtime = current_thread_runtime()?;
    let mut reader = Reader::default();
    if !std::io::stdout().is_terminal() {
        return plain(addr, &runtime, &mut reader);
    }
    // The first answer is awaited before taking over the screen: a wrong address says so on
    // a normal terminal.
    let first = runtime.block_on(fetch_status(addr))?;
    let mut shown = reader.take(first);
    let mut error = None;
    let mut terminal = ratatui::try_init()?;
    let mut next = Instant::now() + REFRESH;
    let result = loop {
        if let Err(e) = terminal.draw(|f| draw(f, addr, &shown, error.as_deref())) {
            break Err(e.into());
        }
        let wait = next.saturating_duration_since(Instant::now());
        match event::poll(wait) {
            Ok(true) => match event::read() {
                Ok(Event::Key(key))
                    if key.kind == KeyEventKind::Press && quits(key.code, key.modifiers) =>
                {
                    break Ok(ExitCode::SUCCESS)
                }
                Ok(_) => continue,
                Err(e) => break Err(e.into()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.into()),
        }
        next = Instant::now() + REFRESH;
        match runtime.block_on(fetch_status(addr)) {
            Ok(status) => {
                shown = reader.take(status);
                error = None;
            }
            // The daemon may be restarting: say so and keep asking.
            Err(e) => error = Some(e.to_string()),
        }
    };
    ratatui::try_restore()?;
    result
}

fn quits(code: KeyCode, modifiers: KeyModifiers) -> bool {
    matches!(code, KeyCode::Char('q') | KeyCode::Esc)
        || (code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL))
}

/// The previous reading, for rates.
#[derive(Default)]
struct Reader {
    last: Option<(Instant, Status)>,
}

impl Reader {
    fn take(&mut self, status: Status) -> Rows {
        let now = Instant::now();
        let shown = match &self.last {
            Some((at, before)) => rows(Some(before), &status, now - *at),
            None => rows(None, &status, REFRESH),
        };
        self.last = Some((now, status));
        shown
    }
}

/// Plain rows at each refresh; ends quietly when the reader goes away.
fn plain(
    addr: SocketAddr,
    runtime: &tokio::runtime::Runtime,
    reader: &mut Reader,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout();
    loop {
        let status = runtime.block_on(fetch_status(addr))?;
        let text = wsbridge::top::render_plain(&reader.take(status));
        let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
        std::thread::sleep(REFRESH);
    }
}

fn draw(frame: &mut Frame<'_>, addr: SocketAddr, shown: &Rows, error: Option<&str>) {
    let [title, upstreams, sinks, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(shown.upstreams.len() as u16 + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let heading = match error {
        Some(e) => format!("wsbridge top — {addr} — {e}"),
        None => format!("wsbridge top — {addr}"),
    };
    frame.render_widget(Line::from(heading), title);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let table = Table::new(
        shown.upstreams.iter().map(|u| Row::new(u.cells())),
        [
            Constraint::Min(16),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(UPSTREAM_COLUMNS).style(bold))
    .block(Block::bordered().title("upstreams"));
    frame.render_widget(table, upstreams);
    let table = Table::new(
        shown.sinks.iter().map(|s| Row::new(s.cells())),
        [
            Constraint::Min(24),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Min(16),
        ],
    )
    .header(Row::new(SINK_COLUMNS).style(bold))
    .block(Block::bordered().title("sinks"));
    frame.render_widget(table, sinks);
    frame.render_widget(Line::from("q quit · refreshed every second"), footer);
}
