//! How the model's types are stored on PostgreSQL: ids and times as BIGINT, delivery ids and
//! statuses as TEXT labels. The one place a model type meets a PostgreSQL column (the SQLite
//! twin is `store/columns.rs`).

use std::error::Error;

use bytes::BytesMut;
use inlet_shared::config::Role;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

use super::PgError;

use crate::model::{
    ApiTokenId, AttemptOutcome, AuditAction, BulkReplayId, BulkReplayStatus, ConfigVersion, DeadLetterReason,
    DeliveryId, DeliveryStatus, EventRowId, LeaseToken, LinkedAccountId, RouteStatus, UnixMs, UserId,
};

type BoxError = Box<dyn Error + Sync + Send>;

/// Integer newtypes: stored as their BIGINT.
macro_rules! integer_column {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                self.0.to_sql(ty, out)
            }

            accepts!(INT8);
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                i64::from_sql(ty, raw).map($name)
            }

            accepts!(INT8);
        }
    )+};
}

integer_column!(UnixMs, EventRowId, LeaseToken, UserId, ApiTokenId, BulkReplayId, LinkedAccountId);

/// Labelled enums: stored as their label; an unknown label is a read error, never a default.
macro_rules! label_column {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                self.as_str().to_sql(ty, out)
            }

            accepts!(TEXT, VARCHAR);
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let label = <&str>::from_sql(ty, raw)?;
                $name::parse(label).ok_or_else(|| format!("unknown {} {label:?}", stringify!($name)).into())
            }

            accepts!(TEXT, VARCHAR);
        }
    )+};
}

label_column!(DeliveryStatus, AttemptOutcome, DeadLetterReason, RouteStatus, BulkReplayStatus, AuditAction);

impl ToSql for DeliveryId {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.as_str().to_sql(ty, out)
    }

    accepts!(TEXT, VARCHAR);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for DeliveryId {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        <&str>::from_sql(ty, raw).map(|id| DeliveryId::from_stored(id.to_owned()))
    }

    accepts!(TEXT, VARCHAR);
}

impl ToSql for ConfigVersion {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.as_str().to_sql(ty, out)
    }

    accepts!(TEXT, VARCHAR);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for ConfigVersion {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        <&str>::from_sql(ty, raw).map(|version| ConfigVersion::from_stored(version.to_owned()))
    }

    accepts!(TEXT, VARCHAR);
}

/// A role column. `Role` is inlet-shared's, so tokio-postgres's traits cannot be implemented
/// for it here (orphan rule): rows read it through this, and write `role.as_str()`. An unknown
/// label is a read error, never a default.
pub(super) fn role_at(row: &Row, index: usize) -> Result<Role, PgError> {
    let label: &str = row.try_get(index)?;
    Role::parse(label).ok_or_else(|| PgError::Refused(format!("unknown role {label:?}")))
}
