//! Reading stored rows leniently: a column that cannot be decoded is
//! noted as a broken field and read as its default, so one bad row never
//! stops the control plane.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

/// One field of a stored row that cannot be decrypted or parsed, or that
/// breaks a rule of the data model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The field as the API names it ("api_key", "targets[1].weight").
    pub field: String,
    /// What is wrong, without the value.
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Reads the columns of one row, noting each column that cannot be decoded
/// (and reading it as its default) instead of failing the whole read: one
/// bad row must not stop the control plane.
pub(super) struct RowReader<'r> {
    row: &'r AnyRow,
    /// Put before field names, e.g. "targets[2].".
    pub(super) prefix: String,
    pub(super) broken: Vec<Broken>,
}

impl<'r> RowReader<'r> {
    pub(super) fn new(row: &'r AnyRow) -> Self {
        RowReader {
            row,
            prefix: String::new(),
            broken: Vec::new(),
        }
    }

    /// What could not be read; if everything could, what the spec's own
    /// check finds wrong with what was read.
    pub(super) fn broken_or(self, problems: impl FnOnce() -> Vec<Broken>) -> Vec<Broken> {
        if self.broken.is_empty() {
            problems()
        } else {
            self.broken
        }
    }

    pub(super) fn note(&mut self, field: &str, reason: impl Into<String>) {
        self.broken.push(Broken {
            field: format!("{}{field}", self.prefix),
            reason: reason.into(),
        });
    }

    pub(super) fn get<T>(&mut self, col: &str, field: &str) -> T
    where
        T: for<'a> sqlx::Decode<'a, Any> + sqlx::Type<Any> + Default,
    {
        match self.row.try_get::<T, _>(col) {
            Ok(v) => v,
            Err(e) => {
                self.note(field, format!("cannot be read: {e}"));
                T::default()
            }
        }
    }

    /// The `default_params` column: a JSON object of default request
    /// parameters (none, and the field noted, when it is not one).
    pub(super) fn default_params(&mut self) -> std::collections::BTreeMap<String, String> {
        let text: String = self.get("default_params", "default_params");
        super::specs::params_from_json(&text).unwrap_or_else(|e| {
            self.note("default_params", e);
            Default::default()
        })
    }

    pub(super) fn flag(&mut self, col: &str) -> bool {
        self.get::<i64>(col, col) != 0
    }

    pub(super) fn u32(&mut self, col: &str) -> u32 {
        let v: i64 = self.get(col, col);
        u32::try_from(v).unwrap_or_else(|_| {
            self.note(col, format!("the stored value {v} is out of range"));
            0
        })
    }

    /// A column parsed with `FromStr`; `fallback` when it does not parse.
    pub(super) fn parse<T: FromStr<Err = llmgw_core::ValidationError>>(
        &mut self,
        col: &str,
        fallback: T,
    ) -> T {
        let text: String = self.get(col, col);
        T::from_str(&text).unwrap_or_else(|e| {
            self.note(col, e.0);
            fallback
        })
    }
}
