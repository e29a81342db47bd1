//! Dependency cycles in `after` lists (guests and services).

/// Every cycle found by a depth-first walk of `edges` (node -> nodes it
/// comes after), each as the list of nodes on it, starting from the node whose
/// edge closes it. Each back edge yields one cycle, so every node on a cycle
/// is reported at least once and a simple cycle exactly once.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for start in 0..edges.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index); `path` mirrors the stack.
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark.get(to).copied() {
                    Some(Mark::New) => {
                        mark[to] = Mark::Open;
                        stack.push((to, 0));
                    }
                    Some(Mark::Open) => {
                        let pos = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        found.push(stack[pos..].iter().map(|(n, _)| *n).collect());
                    }
                    _ => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_self_loops() {
        assert!(cycles(&[vec![1], vec![2], vec![]]).is_empty());
        assert_eq!(cycles(&[vec![1], vec![2], vec![0]]), vec![vec![0, 1, 2]]);
        assert_eq!(cycles(&[vec![0]]), vec![vec![0]]);
        let two = cycles(&[vec![1], vec![0], vec![3], vec![2]]);
        assert_eq!(two, vec![vec![0, 1], vec![2, 3]]);
        // A diamond is not a cycle.
        assert!(cycles(&[vec![1, 2], vec![3], vec![3], vec![]]).is_empty());
    }
}
