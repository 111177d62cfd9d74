//! How the model's types are stored: ids and times as integers or text, each status as its
//! label. The one place a model type meets a SQLite column.

use inlet_shared::config::Role;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Type, ValueRef};

use crate::model::{
    ApiTokenId, AttemptOutcome, AuditAction, BulkReplayId, BulkReplayStatus, ConfigVersion, DeadLetterReason,
    DeliveryId, DeliveryStatus, EventRowId, LeaseToken, LinkedAccountId, RouteStatus, UnixMs, UserId,
};

/// Integer newtypes: stored as their integer.
macro_rules! integer_column {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    )+};
}

integer_column!(UnixMs, EventRowId, LeaseToken, UserId, ApiTokenId, BulkReplayId, LinkedAccountId);

/// Labelled enums: stored as their label; an unknown label is a read error, never a default.
macro_rules! label_column {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let label = value.as_str()?;
                $name::parse(label).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {label:?}", stringify!($name)).into())
                })
            }
        }
    )+};
}

label_column!(DeliveryStatus, AttemptOutcome, DeadLetterReason, RouteStatus, BulkReplayStatus, AuditAction);

impl ToSql for DeliveryId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeliveryId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        String::column_result(value).map(DeliveryId::from_stored)
    }
}

impl ToSql for ConfigVersion {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ConfigVersion {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        String::column_result(value).map(ConfigVersion::from_stored)
    }
}

/// A role column. `Role` is inlet-shared's, so rusqlite's traits cannot be implemented for it
/// here (orphan rule): rows read it through this, and write `role.as_str()`. An unknown label
/// is a read error, never a default (the schema's CHECK admits only the three labels).
pub(super) fn role_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Role> {
    let label: String = row.get(index)?;
    Role::parse(&label).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, format!("unknown role {label:?}").into())
    })
}
