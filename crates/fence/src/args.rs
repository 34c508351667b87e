//! Agent arguments that may carry secrets, and a string type that never prints.

use serde::{Serialize, Serializer};
use std::fmt;

/// A secret string (a password): `Debug`, `Display` and `Serialize` all print `***`.
///
/// Read the value only where it is written to an agent's stdin: [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value. Call this only to hand the value to the agent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

/// True for argument keys whose values are secrets (passwords, keys, community strings).
///
/// Matches `passwd`, `password`, `passwd_script`, `password_script`, `snmp_priv_passwd`,
/// `community`, `key`, `identity_file` and anything containing `passw`, `secret` or `token`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("passw")
        || k.contains("secret")
        || k.contains("token")
        || k == "community"
        || k == "key"
        || k.ends_with("_key")
        || k == "identity_file"
}

/// Ordered `key=value` arguments for an agent (FenceAgentAPI stdin lines or OCF_RESKEY_* variables).
///
/// Setting a key again replaces its value in place (last duplicate wins, as the
/// FenceAgentAPI says). `Debug`, `Display` and `Serialize` print `***` for every
/// value whose key [`is_secret_key`]; only [`AgentArgs::to_stdin`] and
/// [`AgentArgs::iter_exposed`] reveal them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AgentArgs(Vec<(String, String)>);

impl AgentArgs {
    /// No arguments.
    pub fn new() -> Self {
        AgentArgs(Vec::new())
    }
    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }
    /// Builder form of [`AgentArgs::set`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }
    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Merges `other` over `self` (values in `other` win), keeping first-seen order.
    pub fn merged(&self, other: &AgentArgs) -> AgentArgs {
        let mut out = self.clone();
        for (k, v) in &other.0 {
            out.set(k.clone(), v.clone());
        }
        out
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
    /// Every pair with clear values: only for handing them to the agent.
    pub fn iter_exposed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// The FenceAgentAPI stdin text: one `key=value` line per key.
    ///
    /// Newlines inside values would inject extra keys, so they are replaced by spaces.
    pub fn to_stdin(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.0 {
            s.push_str(k);
            s.push('=');
            s.push_str(&v.replace(['\n', '\r'], " "));
            s.push('\n');
        }
        s
    }
    /// Parses FenceAgentAPI stdin text: `#` lines and blank lines are skipped, the
    /// last duplicate wins, lines without `=` are returned as errors (line number, text).
    pub fn parse_stdin(text: &str) -> (AgentArgs, Vec<(usize, String)>) {
        let mut args = AgentArgs::new();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match t.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => args.set(k.trim(), v),
                _ => bad.push((i + 1, t.to_string())),
            }
        }
        (args, bad)
    }
}

impl fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if is_secret_key(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl fmt::Display for AgentArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if is_secret_key(k) {
                write!(f, "{k}=***")?;
            } else {
                write!(f, "{k}={v}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for AgentArgs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            if is_secret_key(k) {
                m.serialize_entry(k, "***")?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for AgentArgs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut a = AgentArgs::new();
        for (k, v) in iter {
            a.set(k, v);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let a = AgentArgs::new()
            .with("ipaddr", "10.0.0.1")
            .with("passwd", "hunter2")
            .with("password_script", "/bin/pw")
            .with("login", "admin");
        for text in [
            format!("{a:?}"),
            format!("{a}"),
            serde_json::to_string(&a).unwrap(),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("/bin/pw"), "{text}");
            assert!(text.contains("10.0.0.1"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        assert!(a.to_stdin().contains("passwd=hunter2\n"));
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn last_duplicate_wins_and_newlines_cannot_inject() {
        let (a, bad) = AgentArgs::parse_stdin("# c\nport=1\n\nport=2\ngarbage\naction=off\n");
        assert_eq!(a.get("port"), Some("2"));
        assert_eq!(a.get("action"), Some("off"));
        assert_eq!(bad, vec![(5, "garbage".to_string())]);
        let b = AgentArgs::new().with("port", "x\naction=on");
        assert_eq!(b.to_stdin(), "port=x action=on\n");
    }

    #[test]
    fn merge_device_over_fencedevice() {
        let fd = AgentArgs::new().with("ipaddr", "a").with("port", "0");
        let dev = AgentArgs::new().with("port", "3");
        let m = fd.merged(&dev);
        assert_eq!(m.get("port"), Some("3"));
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["ipaddr", "port"]);
    }
}
