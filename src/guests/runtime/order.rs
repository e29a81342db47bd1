//! Start and stop order from the `after` lists (pure).
//!
//! Start: a guest starts once every guest in its `after` list runs.
//! Stop (host shutdown): a guest is asked to stop once no running guest
//! has it in its `after` list, so dependents stop first and independent
//! guests stop in parallel.

use crate::config::GuestConfig;

/// Indices of `guests` in start order: each after its prerequisites, ties
/// in the given order. Prerequisites not in the list are ignored; a cycle
/// (which config validation rejects) is appended in the given order.
pub fn start_order(guests: &[&GuestConfig]) -> Vec<usize> {
    let mut placed = vec![false; guests.len()];
    let mut order = Vec::with_capacity(guests.len());
    let index = |name: &str| guests.iter().position(|g| g.name.as_str() == name);
    while order.len() < guests.len() {
        let next = (0..guests.len()).find(|&i| {
            !placed[i]
                && guests[i]
                    .after
                    .iter()
                    .all(|a| index(a.as_str()).is_none_or(|j| placed[j]))
        });
        let i = match next {
            Some(i) => i,
            None => match (0..guests.len()).find(|&i| !placed[i]) {
                Some(i) => i,
                None => break,
            },
        };
        placed[i] = true;
        order.push(i);
    }
    order
}

/// Whether guest `name` may be asked to stop: no guest in `active` (names
/// of running guests with their `after` lists) needs it.
pub fn may_stop<'a>(name: &str, active: impl IntoIterator<Item = &'a GuestConfig>) -> bool {
    !active
        .into_iter()
        .any(|g| g.name.as_str() != name && g.after.iter().any(|a| a.as_str() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guests(spec: &[(&str, &[&str])]) -> Vec<GuestConfig> {
        let files: Vec<(String, String)> = spec
            .iter()
            .map(|(name, after)| {
                let after: Vec<String> = after.iter().map(|a| format!("{a:?}")).collect();
                (
                    format!("{name}.toml"),
                    format!(
                        "schema = 1\nmemory = \"64MiB\"\nafter = [{}]\n",
                        after.join(", ")
                    ),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let config = crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &refs)
            .unwrap_or_else(|e| panic!("{e:?}"));
        config.guests
    }

    #[test]
    fn start_order_puts_prerequisites_first() {
        // Config sorts guests by name: a, b, c, d.
        let g = guests(&[("a", &["c"]), ("b", &[]), ("c", &["d"]), ("d", &[])]);
        let refs: Vec<&GuestConfig> = g.iter().collect();
        let names: Vec<&str> = start_order(&refs)
            .into_iter()
            .map(|i| g[i].name.as_str())
            .collect();
        assert_eq!(names, ["b", "d", "c", "a"]);
    }

    #[test]
    fn dependents_stop_first() {
        let g = guests(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        assert!(!may_stop("a", &g));
        assert!(may_stop("b", &g));
        assert!(may_stop("c", &g));
        // Once b is down, a may stop.
        assert!(may_stop("a", g.iter().filter(|x| x.name.as_str() != "b")));
    }
}
