//! Diagnostics: every problem found in a cluster.conf, with its position and a fix hint.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used as it is.
    Error,
    /// The file can be used, but probably does not do what the administrator wants.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a cluster.conf: where it is, what it is, what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// What to change to fix it.
    pub hint: String,
}

impl Diagnostic {
    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// Compiler style: `file:line:col: error: message` then `  hint: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// A position in the file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// Collects diagnostics for one file.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    file: String,
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection for `file`.
    pub fn new(file: &str) -> Self {
        Diagnostics {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    /// Records an error.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Error, pos, message.into(), hint.into());
    }

    /// Records a warning.
    pub fn warn(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Warning, pos, message.into(), hint.into());
    }

    fn push(&mut self, severity: Severity, pos: Pos, message: String, hint: String) {
        // Bounded: a hostile file cannot make us collect unbounded diagnostics.
        // Errors and warnings have separate budgets, so warnings never crowd out an error.
        const MAX_EACH: usize = 500;
        let same = self.list.iter().filter(|d| d.severity == severity).count();
        if same >= MAX_EACH {
            return;
        }
        self.list.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message,
            hint,
        });
    }

    /// True when at least one error was recorded.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics, sorted by position (errors before warnings at one position).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.column, d.severity));
        self.list
    }
}
