//! `${…}` expansion in header, cookie and other secret-bearing values: `${NAME}` from the
//! environment (`${NAME:-default}` when it may be unset), `${file:/path}` from a file and
//! `${credential:NAME}` from systemd's `$CREDENTIALS_DIRECTORY`. Files are read each time the config is (at start and on every
//! reload), so a rotated secret is picked up by a reload.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A secret file larger than this is a mistake (`${file:/dev/zero}`), not a token.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Replaces each `${NAME}` with the environment variable (`${NAME:-default}`: `default` when
/// it is unset or empty, as in the shell), `${file:/path}` with the file's
/// contents (one trailing newline removed) and `${credential:NAME}` with
/// `$CREDENTIALS_DIRECTORY/NAME` read the same way; `$${` stays a literal `${`. `env` looks
/// up environment variables (`CREDENTIALS_DIRECTORY` too). Errors never include a value.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${…}; write ${NAME} (or $${ for a literal)".to_string())?;
            out.push_str(&lookup(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one `${…}`.
fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if let Some(path) = name.strip_prefix("file:") {
        if !Path::new(path).is_absolute() {
            return Err(format!(
                "${{file:{path}}} needs an absolute path (the daemon's working directory is not the config's)"
            ));
        }
        return read_secret(Path::new(path), &format!("${{file:{path}}}"));
    }
    if let Some(credential) = name.strip_prefix("credential:") {
        if credential.is_empty() || credential.contains('/') || credential.starts_with('.') {
            return Err(format!(
                "${{credential:{credential}}}: a credential name is a file name in $CREDENTIALS_DIRECTORY, without '/' or a leading '.'"
            ));
        }
        let dir = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).ok_or_else(|| {
            format!(
                "${{credential:{credential}}} needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential={credential}:/path; outside systemd use ${{file:/path}}"
            )
        })?;
        let path = PathBuf::from(dir).join(credential);
        return read_secret(&path, &format!("${{credential:{credential}}}"));
    }
    // The shell's meaning: an empty variable takes the default too. The default is literal
    // text (no `}` and no nested `${…}`), so the example config can carry a placeholder.
    if let Some((variable, default)) = name.split_once(":-") {
        return Ok(env(variable)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string()));
    }
    env(name).ok_or_else(|| {
        format!("environment variable {name} is not set; export it (under systemd: Environment= or EnvironmentFile=), or give a default: ${{{name}:-default}}")
    })
}

/// A secret file's contents with one trailing newline (`\n` or `\r\n`) removed.
fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    let cannot = |e: &dyn std::fmt::Display| {
        format!(
            "{what}: cannot read {}: {e}; check that the file exists and that wsbridge's user may read it",
            path.display()
        )
    };
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "{what}: {} is larger than 1 MiB; a secret file holds one value",
            path.display()
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("{what}: {} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn files_and_credentials_expand_beside_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("two"), "a\nb\n\n").unwrap();
        let token = dir.path().join("token");
        let env = |name: &str| match name {
            "USER_ID" => Some("42".to_string()),
            "CREDENTIALS_DIRECTORY" => Some(dir.path().display().to_string()),
            _ => None,
        };
        let value = format!(
            "Bearer ${{file:{}}} ${{credential:two}} ${{USER_ID}} $${{x}}",
            token.display()
        );
        assert_eq!(
            expand_env(&value, &env).unwrap(),
            "Bearer s3cret a\nb\n 42 ${x}",
            "one trailing newline removed, no more"
        );
    }

    #[test]
    fn a_default_stands_in_for_an_unset_or_empty_variable() {
        let env = |name: &str| match name {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand_env(
                "${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${UNSET:-} ${UNSET:-a:-b}",
                &env
            )
            .unwrap(),
            "value d d  a:-b"
        );
        let e = expand_env("${UNSET}", &env).unwrap_err();
        assert!(
            e.contains("UNSET is not set") && e.contains("${UNSET:-default}"),
            "{e}"
        );
    }

    #[test]
    fn missing_files_and_directories_are_clear_errors() {
        let e = expand_env("${credential:api}", &no_env).unwrap_err();
        assert!(
            e.contains("CREDENTIALS_DIRECTORY") && e.contains("LoadCredential"),
            "{e}"
        );
        let e = expand_env("${file:/nonexistent/token}", &no_env).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/token"), "{e}");
        let e = expand_env("${file:relative/token}", &no_env).unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let env = |_: &str| Some(dir.path().display().to_string());
        let e = expand_env("${credential:missing}", &env).unwrap_err();
        assert!(e.contains("${credential:missing}: cannot read"), "{e}");
        let e = expand_env("${credential:../etc/passwd}", &env).unwrap_err();
        assert!(e.contains("without '/'"), "{e}");
    }
}
