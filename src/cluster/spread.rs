//! Who should hold which lease slot: a pure function of the live members and the current
//! holders, so that every instance, looking at the same bucket, reaches the same answer.
//!
//! Each member gets a quota of ⌊S/N⌋ or ⌈S/N⌉ of the S slots. Current holders keep what they
//! hold up to their quota (the extra ⌈⌉ quotas go to those holding most), so a change in
//! membership moves only the slots that must move; the rest go, slot by slot, to the member
//! with quota left that ranks the upstream highest (rendezvous hashing of member and
//! upstream). No two slots of one upstream go to the same member.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};

/// One lease slot: the `slot`-th of an upstream's `replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// The upstream's name.
    pub upstream: String,
    /// 0 .. replicas.
    pub index: usize,
}

/// The rendezvous weight of `member` for `upstream`: the same on every instance.
pub fn rank(member: &str, upstream: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(member.as_bytes())
        .chain_update([0])
        .chain_update(upstream.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// The member each slot should be held by. `holders` names the live holder of each slot
/// that has one (a holder that is not a member counts as none). A slot with no member able
/// to take it (more replicas than members) is absent.
pub fn assign(
    members: &BTreeSet<String>,
    holders: &BTreeMap<Slot, String>,
    slots: &[Slot],
) -> HashMap<Slot, String> {
    let mut out = HashMap::new();
    if members.is_empty() {
        return out;
    }
    let n = members.len();
    let (base, extra) = (slots.len() / n, slots.len() % n);
    let mut held: BTreeMap<&str, Vec<&Slot>> =
        members.iter().map(|m| (m.as_str(), Vec::new())).collect();
    for slot in slots {
        if let Some(h) = holders.get(slot) {
            if let Some(list) = held.get_mut(h.as_str()) {
                list.push(slot);
            }
        }
    }
    // The ⌈⌉ quotas go to the members holding most, then by a hash of their name.
    let mut order: Vec<&str> = members.iter().map(String::as_str).collect();
    order.sort_by_key(|m| (std::cmp::Reverse(held[m].len()), rank(m, ""), *m));
    let mut quota: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + usize::from(i < extra)))
        .collect();
    let mut has: BTreeSet<(&str, &str)> = BTreeSet::new();
    // Keep: each member's slots, best ranked first, up to its quota.
    for (member, mut list) in held.clone() {
        list.sort_by_key(|s| (std::cmp::Reverse(rank(member, &s.upstream)), s.index));
        for slot in list {
            let q = quota.get_mut(member).map_or(0, |q| *q);
            if q == 0 || has.contains(&(member, slot.upstream.as_str())) {
                continue;
            }
            quota.insert(member, q - 1);
            has.insert((member, slot.upstream.as_str()));
            out.insert(slot.clone(), member.to_string());
        }
    }
    // The rest, in slot order, to the best-ranked member with quota left (or, when replicas
    // leave no such member, the best-ranked one without this upstream).
    for slot in slots {
        if out.contains_key(slot) {
            continue;
        }
        let free = |m: &&str| !has.contains(&(*m, slot.upstream.as_str()));
        let best = |with_quota: bool| {
            members
                .iter()
                .map(String::as_str)
                .filter(free)
                .filter(|m| !with_quota || quota[m] > 0)
                .max_by_key(|m| (rank(m, &slot.upstream), *m))
        };
        let Some(member) = best(true).or_else(|| best(false)) else {
            continue;
        };
        if let Some(q) = quota.get_mut(member) {
            *q = q.saturating_sub(1);
        }
        has.insert((member, slot.upstream.as_str()));
        out.insert(slot.clone(), member.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(upstreams: usize, replicas: usize) -> Vec<Slot> {
        (0..upstreams)
            .flat_map(|u| {
                (0..replicas).map(move |i| Slot {
                    upstream: format!("u{u}"),
                    index: i,
                })
            })
            .collect()
    }

    fn members(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("i{i}")).collect()
    }

    fn counts(a: &HashMap<Slot, String>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for m in a.values() {
            *c.entry(m.clone()).or_default() += 1;
        }
        c
    }

    #[test]
    fn twelve_on_three_is_four_each_from_nothing() {
        let a = assign(&members(3), &BTreeMap::new(), &slots(12, 1));
        assert_eq!(a.len(), 12);
        assert!(counts(&a).values().all(|&c| c == 4), "{:?}", counts(&a));
    }

    #[test]
    fn uneven_counts_differ_by_at_most_one() {
        for (u, n) in [(13, 3), (5, 4), (2, 3), (100, 7)] {
            let a = assign(&members(n), &BTreeMap::new(), &slots(u, 1));
            let c = counts(&a);
            let (min, max) = (
                c.values().min().copied().unwrap_or(0),
                c.values().max().copied().unwrap_or(0),
            );
            assert!(
                max - min <= 1 || c.len() < n && max <= 1,
                "{u} on {n}: {c:?}"
            );
        }
    }

    #[test]
    fn a_joiner_takes_its_share_and_nothing_else_moves() {
        let all = slots(12, 1);
        let before = assign(&members(3), &BTreeMap::new(), &all);
        let holders: BTreeMap<Slot, String> =
            before.iter().map(|(s, m)| (s.clone(), m.clone())).collect();
        let after = assign(&members(4), &holders, &all);
        let moved: Vec<_> = all.iter().filter(|s| before[*s] != after[*s]).collect();
        assert_eq!(moved.len(), 3, "{moved:?}");
        assert!(moved.iter().all(|s| after[*s] == "i3"));
        assert!(counts(&after).values().all(|&c| c == 3));
    }

    #[test]
    fn a_leaver_s_slots_go_to_the_others_and_nothing_else_moves() {
        let all = slots(12, 1);
        let before = assign(&members(3), &BTreeMap::new(), &all);
        let holders: BTreeMap<Slot, String> = before
            .iter()
            .filter(|(_, m)| *m != "i2")
            .map(|(s, m)| (s.clone(), m.clone()))
            .collect();
        let mut two = members(3);
        two.remove("i2");
        let after = assign(&two, &holders, &all);
        for s in &all {
            if before[s] != "i2" {
                assert_eq!(before[s], after[s]);
            }
        }
        assert!(counts(&after).values().all(|&c| c == 6));
    }

    #[test]
    fn replicas_go_to_distinct_members() {
        let all = slots(5, 2);
        let a = assign(&members(3), &BTreeMap::new(), &all);
        for u in 0..5 {
            let name = format!("u{u}");
            let holders: BTreeSet<_> = all
                .iter()
                .filter(|s| s.upstream == name)
                .map(|s| &a[s])
                .collect();
            assert_eq!(holders.len(), 2);
        }
        // More replicas than members: the spare slots stay unassigned.
        let a = assign(&members(1), &BTreeMap::new(), &slots(2, 2));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn the_same_view_gives_the_same_answer() {
        let all = slots(30, 2);
        let a = assign(&members(4), &BTreeMap::new(), &all);
        let b = assign(&members(4), &BTreeMap::new(), &all);
        assert_eq!(a, b);
    }
}
