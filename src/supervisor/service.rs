//! What a supervised service is: the runtime spec (already validated config)
//! and the checks on a whole table of them (unique names, known
//! dependencies, no cycles).

pub use super::backoff::{Backoff, CrashLimit};
use super::SupervisorError;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::time::Duration;

// One definition of readiness and restart policy for config and runtime:
// the supervisor runs exactly what host.toml says.
pub use crate::config::{Readiness, RestartPolicy};

/// One service the supervisor runs. Build with [`ServiceSpec::new`] and
/// adjust fields; everything else has the defaults documented per field.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Unique name; used in logs (`service=NAME`) and status.
    pub name: String,
    /// Program and arguments; argv[0] is looked up in PATH.
    pub argv: Vec<String>,
    /// Extra environment on top of the clean base (PATH only).
    pub env: Vec<(String, String)>,
    /// Services that must be ready before this one starts.
    pub after: Vec<String>,
    /// Readiness condition (default: started).
    pub ready: Readiness,
    /// Restart policy (default: always).
    pub restart: RestartPolicy,
    /// Signal sent to the service's process group to stop it (default SIGTERM).
    pub stop_signal: Signal,
    /// How long to wait after `stop_signal` before SIGKILL (default 10 s).
    pub stop_timeout: Duration,
    /// Restart delays (default 100 ms doubling to 30 s).
    pub backoff: Backoff,
    /// Crash-loop limit (default 5 restarts within 60 s).
    pub crash_limit: CrashLimit,
}

// Built by the config conversion (crate::config -> ServiceSpec), which is
// not wired into `run` yet.
#[allow(dead_code)]
impl ServiceSpec {
    /// A service running `argv` with the defaults.
    pub fn new(name: impl Into<String>, argv: &[&str]) -> Self {
        Self {
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            after: Vec::new(),
            ready: Readiness::Started,
            restart: RestartPolicy::Always,
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            crash_limit: CrashLimit::default(),
        }
    }
}

/// Check a service table and return its start order: every service comes
/// after the services in its `after` list; ties keep table order.
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, SupervisorError> {
    let mut index = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if s.argv.is_empty() {
            return Err(SupervisorError::EmptyArgv {
                service: s.name.clone(),
            });
        }
        if index.insert(s.name.as_str(), i).is_some() {
            return Err(SupervisorError::DuplicateService {
                service: s.name.clone(),
            });
        }
    }
    let mut deps = Vec::with_capacity(specs.len());
    for s in specs {
        let mut d = Vec::new();
        for dep in &s.after {
            match index.get(dep.as_str()) {
                Some(&j) => d.push(j),
                None => {
                    return Err(SupervisorError::UnknownDependency {
                        service: s.name.clone(),
                        dependency: dep.clone(),
                    })
                }
            }
        }
        deps.push(d);
    }
    // Repeatedly take the first service whose dependencies are all placed
    // (tables are small; quadratic is fine and keeps table order stable).
    let mut placed = vec![false; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    while order.len() < specs.len() {
        let next = (0..specs.len()).find(|&i| !placed[i] && deps[i].iter().all(|&j| placed[j]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let cycle: Vec<&str> = (0..specs.len())
                    .filter(|&i| !placed[i])
                    .map(|i| specs[i].name.as_str())
                    .collect();
                return Err(SupervisorError::DependencyCycle {
                    services: cycle.join(", "),
                });
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, after: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, &["true"]);
        s.after = after.iter().map(|a| a.to_string()).collect();
        s
    }

    fn names(specs: &[ServiceSpec], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| specs[i].name.clone()).collect()
    }

    #[test]
    fn order_respects_after_and_keeps_table_order() {
        let specs = vec![
            svc("c", &["b"]),
            svc("x", &[]),
            svc("b", &["a"]),
            svc("a", &[]),
        ];
        let order = start_order(&specs).unwrap();
        assert_eq!(names(&specs, &order), vec!["x", "a", "b", "c"]);
    }

    #[test]
    fn table_errors_name_the_culprit() {
        let cases: Vec<(Vec<ServiceSpec>, &str)> = vec![
            (vec![svc("a", &[]), svc("a", &[])], "\"a\" is listed twice"),
            (
                vec![svc("a", &["nope"])],
                "after \"nope\", which is not a service",
            ),
            (
                vec![svc("a", &["b"]), svc("b", &["a"]), svc("z", &[])],
                "a, b depend on each other",
            ),
            (
                vec![ServiceSpec::new("empty", &[])],
                "\"empty\" has an empty argv",
            ),
        ];
        for (specs, want) in cases {
            let err = start_order(&specs).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = ServiceSpec::new("s", &["sleep", "1"]);
        assert_eq!(s.ready, Readiness::Started);
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.stop_signal, Signal::SIGTERM);
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.crash_limit.max_restarts, 5);
    }
}
