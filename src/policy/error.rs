//! Policy errors that point at the exact place in the file.
//!
//! A user who mistypes a TTL should not have to bisect their policy: every error carries
//! the file, the line and column, the field's path (`route[2].ttl`) and what would be valid.

use std::fmt;
use std::ops::Range;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or a label such as `<inline>` for policies built from a string).
    pub file: String,
    /// 1-based line and column; `None` when the problem has no single place (e.g. I/O).
    pub position: Option<(usize, usize)>,
    /// The field's path, such as `route[1].ttl`; empty for document-level problems.
    pub field: String,
    /// What is wrong, and what would be valid.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// Turns byte offsets in the policy source into errors with line and column.
pub(crate) struct Locator<'a> {
    file: &'a str,
    source: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, source: &'a str) -> Self {
        Self { file, source }
    }

    pub(crate) fn file(&self) -> &str {
        self.file
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// An error at `span` for `field`.
    pub(crate) fn at(
        &self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError {
            file: self.file.to_string(),
            position: span.map(|s| self.line_col(s.start)),
            field: field.into(),
            message: message.into(),
        }
    }
}
