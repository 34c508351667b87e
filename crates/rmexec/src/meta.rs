//! OCF agent meta-data (`<resource-agent>` XML): parameters and advised action timeouts.

use crate::exec::StepError;
use crate::timeout::parse_duration;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One `<parameter>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParamMeta {
    /// Parameter name (passed as `OCF_RESKEY_<name>`).
    pub name: String,
    /// `required="1"`.
    pub required: bool,
    /// `unique="1"`.
    pub unique: bool,
    /// `<content default>`, if any.
    pub default: Option<String>,
    /// `<shortdesc>`.
    pub shortdesc: String,
}

/// One `<action>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionMeta {
    /// Action name (`start`, `monitor`, ...).
    pub name: String,
    /// The advised minimum timeout, if given and readable.
    pub timeout: Option<Duration>,
    /// `interval`, for monitor.
    pub interval: Option<Duration>,
    /// `depth` (OCF_CHECK_LEVEL), for monitor.
    pub depth: Option<u32>,
}

/// An agent's meta-data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentMeta {
    /// `<resource-agent name>`.
    pub name: String,
    /// `<shortdesc>`.
    pub shortdesc: String,
    /// Parameters in document order.
    pub parameters: Vec<ParamMeta>,
    /// Actions in document order.
    pub actions: Vec<ActionMeta>,
}

fn child_text(n: roxmltree::Node, tag: &str) -> String {
    n.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn flag(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1" | "true" | "yes"))
}

impl AgentMeta {
    /// Parses meta-data XML; anything that is not a `<resource-agent>` document is an error.
    pub fn parse(xml: &str) -> Result<AgentMeta, StepError> {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(xml, opts)
            .map_err(|e| StepError::Failed(format!("agent meta-data is not XML: {e}")))?;
        let root = doc.root_element();
        if !root.has_tag_name("resource-agent") {
            return Err(StepError::Failed(format!(
                "agent meta-data has <{}> where <resource-agent> belongs",
                root.tag_name().name()
            )));
        }
        let mut parameters = Vec::new();
        let mut actions = Vec::new();
        for sect in root.children().filter(|n| n.is_element()) {
            if sect.has_tag_name("parameters") {
                for p in sect.children().filter(|n| n.has_tag_name("parameter")) {
                    let Some(name) = p.attribute("name") else {
                        continue;
                    };
                    parameters.push(ParamMeta {
                        name: name.to_string(),
                        required: flag(p.attribute("required")),
                        unique: flag(p.attribute("unique")),
                        default: p
                            .children()
                            .find(|c| c.has_tag_name("content"))
                            .and_then(|c| c.attribute("default"))
                            .map(str::to_string),
                        shortdesc: child_text(p, "shortdesc"),
                    });
                }
            } else if sect.has_tag_name("actions") {
                for a in sect.children().filter(|n| n.has_tag_name("action")) {
                    let Some(name) = a.attribute("name") else {
                        continue;
                    };
                    actions.push(ActionMeta {
                        name: name.to_string(),
                        timeout: a.attribute("timeout").and_then(parse_duration),
                        interval: a.attribute("interval").and_then(parse_duration),
                        depth: a.attribute("depth").and_then(|d| d.trim().parse().ok()),
                    });
                }
            }
        }
        Ok(AgentMeta {
            name: root.attribute("name").unwrap_or_default().to_string(),
            shortdesc: child_text(root, "shortdesc"),
            parameters,
            actions,
        })
    }

    /// The advised timeout of `action`, if the agent gives one.
    pub fn timeout(&self, action: &str) -> Option<Duration> {
        self.actions
            .iter()
            .find(|a| a.name == action)
            .and_then(|a| a.timeout)
    }

    /// Checks a resource's attributes: every required parameter must be set.
    /// Unknown attributes are returned (rgmanager and Pacemaker pass them anyway).
    pub fn check(
        &self,
        rtype: &str,
        name: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, StepError> {
        let missing: Vec<&str> = self
            .parameters
            .iter()
            .filter(|p| p.required && attrs.get(&p.name).is_none_or(|v| v.is_empty()))
            .map(|p| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(StepError::Config(format!(
                "{rtype} {name}: missing required parameter(s) {}: add them as attributes, e.g. {}=\"...\"",
                missing.join(", "),
                missing[0]
            )));
        }
        Ok(attrs
            .keys()
            .filter(|k| !k.starts_with("__") && *k != "name" && *k != "ref")
            .filter(|k| !self.parameters.iter().any(|p| &p.name == *k))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="IPaddr2" version="1.0">
<version>1.0</version>
<shortdesc lang="en">Manages virtual
  IPv4 and IPv6 addresses</shortdesc>
<parameters>
<parameter name="ip" unique="1" required="1"><shortdesc lang="en">IP</shortdesc><content type="string" default=""/></parameter>
<parameter name="cidr_netmask"><content type="string" default="24"/></parameter>
</parameters>
<actions>
<action name="start" timeout="20s"/>
<action name="monitor" timeout="20s" interval="10s" depth="0"/>
<action name="meta-data" timeout="5"/>
</actions>
</resource-agent>"#;

    #[test]
    fn parses_and_checks() {
        let m = AgentMeta::parse(XML).unwrap();
        assert_eq!(m.name, "IPaddr2");
        assert_eq!(m.shortdesc, "Manages virtual IPv4 and IPv6 addresses");
        assert_eq!(m.parameters.len(), 2);
        assert!(m.parameters[0].required && m.parameters[0].unique);
        assert_eq!(m.parameters[1].default.as_deref(), Some("24"));
        assert_eq!(m.timeout("start"), Some(Duration::from_secs(20)));
        assert_eq!(m.timeout("meta-data"), Some(Duration::from_secs(5)));
        assert_eq!(m.actions[1].depth, Some(0));
        assert_eq!(m.timeout("stop"), None);
        let mut attrs = BTreeMap::new();
        let e = m.check("IPaddr2", "vip", &attrs).unwrap_err().to_string();
        assert!(e.contains("missing required parameter(s) ip"), "{e}");
        attrs.insert("ip".to_string(), "10.0.0.5".to_string());
        attrs.insert("colour".to_string(), "blue".to_string());
        attrs.insert("__start_timeout".to_string(), "5".to_string());
        assert_eq!(m.check("IPaddr2", "vip", &attrs).unwrap(), ["colour"]);
        assert!(AgentMeta::parse("<html/>").is_err());
        assert!(AgentMeta::parse("not xml").is_err());
    }
}
