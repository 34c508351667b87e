//! Per-action timeouts from resource attributes.

use crate::exec::{Op, StepError};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default start timeout (OCF start, LSB start, mount).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default stop timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default status (OCF monitor) timeout.
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(20);

/// Parses `30` (seconds), `30s`, `500ms`, `2m`/`2min`, `1h`; `None` when malformed or zero.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" | "sec" | "secs" => Duration::from_secs(n),
        "ms" | "msec" => Duration::from_millis(n),
        "m" | "min" | "mins" => Duration::from_secs(n.checked_mul(60)?),
        "h" | "hr" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// The timeout for `op` on a resource with `attrs`: `__start_timeout`,
/// `__stop_timeout`, `__status_timeout` or `__monitor_timeout` if set, else the default.
pub fn op_timeout(attrs: &BTreeMap<String, String>, op: Op) -> Result<Duration, StepError> {
    let (keys, default): (&[&str], _) = match op {
        Op::Start => (&["__start_timeout"], DEFAULT_START_TIMEOUT),
        Op::Stop => (&["__stop_timeout"], DEFAULT_STOP_TIMEOUT),
        Op::Status => (
            &["__status_timeout", "__monitor_timeout"],
            DEFAULT_STATUS_TIMEOUT,
        ),
    };
    for k in keys {
        if let Some(v) = attrs.get(*k) {
            return parse_duration(v).ok_or_else(|| {
                StepError::Config(format!(
                    "{k}=\"{v}\" is not a timeout: write seconds (\"30\") or a number with ms, s, m or h (\"500ms\", \"2m\")"
                ))
            });
        }
    }
    Ok(default)
}

/// Folds rgmanager `<action name="start|stop|status|monitor" timeout="..." [depth]/>`
/// overrides (as the config crate keeps them, one attribute map per element) into
/// the `__start_timeout`, `__stop_timeout` and `__status_timeout` attributes the
/// executor reads. Attributes already set win; for status the depth-0 (or `*`,
/// or undepthed) entry wins, since the executor checks at level 0.
pub fn fold_action_timeouts(
    attrs: &mut BTreeMap<String, String>,
    actions: &[BTreeMap<String, String>],
) {
    let mut picked: BTreeMap<&str, (bool, &str)> = BTreeMap::new();
    for a in actions {
        let (Some(name), Some(t)) = (a.get("name"), a.get("timeout")) else {
            continue;
        };
        let key = match name.as_str() {
            "start" => "__start_timeout",
            "stop" => "__stop_timeout",
            "status" | "monitor" => "__status_timeout",
            _ => continue,
        };
        let level0 = a.get("depth").is_none_or(|d| d == "0" || d == "*");
        match picked.get(key) {
            Some((true, _)) => {}
            Some((false, _)) if !level0 => {}
            _ => {
                picked.insert(key, (level0, t.as_str()));
            }
        }
    }
    for (k, (_, t)) in picked {
        if !(k == "__status_timeout" && attrs.contains_key("__monitor_timeout")) {
            attrs.entry(k.to_string()).or_insert_with(|| t.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 30s "), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn attribute_overrides_default() {
        let mut a = BTreeMap::new();
        assert_eq!(op_timeout(&a, Op::Start).unwrap(), DEFAULT_START_TIMEOUT);
        assert_eq!(op_timeout(&a, Op::Status).unwrap(), DEFAULT_STATUS_TIMEOUT);
        a.insert("__monitor_timeout".to_string(), "7".to_string());
        a.insert("__stop_timeout".to_string(), "250ms".to_string());
        assert_eq!(op_timeout(&a, Op::Status).unwrap(), Duration::from_secs(7));
        assert_eq!(
            op_timeout(&a, Op::Stop).unwrap(),
            Duration::from_millis(250)
        );
        a.insert("__start_timeout".to_string(), "soon".to_string());
        let e = op_timeout(&a, Op::Start).unwrap_err().to_string();
        assert!(e.contains("__start_timeout") && e.contains("500ms"), "{e}");
    }

    #[test]
    fn folds_action_elements() {
        let act = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let actions = vec![
            act(&[("name", "status"), ("depth", "20"), ("timeout", "90")]),
            act(&[("name", "status"), ("depth", "0"), ("timeout", "15")]),
            act(&[("name", "start"), ("timeout", "2m")]),
            act(&[("name", "stop"), ("timeout", "30")]),
            act(&[("name", "migrate"), ("timeout", "600")]),
            act(&[("name", "start")]),
        ];
        let mut a = BTreeMap::new();
        a.insert("__stop_timeout".to_string(), "5".to_string());
        fold_action_timeouts(&mut a, &actions);
        assert_eq!(op_timeout(&a, Op::Start).unwrap(), Duration::from_secs(120));
        assert_eq!(op_timeout(&a, Op::Stop).unwrap(), Duration::from_secs(5));
        assert_eq!(op_timeout(&a, Op::Status).unwrap(), Duration::from_secs(15));
        assert_eq!(a.len(), 3);
    }
}
