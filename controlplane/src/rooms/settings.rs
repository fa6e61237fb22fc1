//! Runtime settings: rate limits, limits and the slow-mode default, stored
//! in the database as numbered versions and changed by instance admins
//! without a restart. Each change publishes `ConfigChanged { version }`, which
//! the control server pushes to every connected data plane; a data plane
//! that connects later fetches [`current`].
//!
//! A change replaces the whole settings object (absent fields take their
//! defaults), optionally only if the current version is still
//! `expected_version` (compare-and-set: 409 otherwise), so two admins never
//! silently overwrite each other.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::request::{page_limit, JsonObject, Query};
use super::responses::{AdminReadErrors, AdminWriteErrors};
use crate::accounts::Authenticated;
use crate::db::{now_ms, Database};
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

/// Settings data planes apply live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Sustained messages per second per connection (token bucket rate),
    /// 0.1 to 10000.
    #[schema(minimum = 0.1, maximum = 10000.0)]
    pub messages_per_second: f64,
    /// Messages a connection may send at once (token bucket size), 1 to
    /// 100000.
    #[schema(minimum = 1, maximum = 100000)]
    pub message_burst: i64,
    /// New connections per IP address per minute, 1 to 1000000.
    #[schema(minimum = 1, maximum = 1000000)]
    pub connections_per_ip_per_minute: i64,
    /// Slow mode of new rooms that do not set one, 0 to 21600 seconds.
    #[schema(minimum = 0, maximum = 21600)]
    pub slow_mode_default_seconds: i64,
    /// Largest message body in bytes, 1 to 65536.
    #[schema(minimum = 1, maximum = 65536)]
    pub message_bytes_max: i64,
    /// Most messages in one history page, 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub history_page_max: i64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            messages_per_second: 5.0,
            message_burst: 10,
            connections_per_ip_per_minute: 60,
            slow_mode_default_seconds: 0,
            message_bytes_max: 4000,
            history_page_max: 100,
        }
    }
}

impl RuntimeSettings {
    /// Checks ranges; the error names the field (`settings.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.messages_per_second.is_finite()
            && (0.1..=10_000.0).contains(&self.messages_per_second))
        {
            return Err("settings.messages_per_second must be between 0.1 and 10000".into());
        }
        let ranges: [(&str, i64, i64, i64); 5] = [
            ("message_burst", self.message_burst, 1, 100_000),
            (
                "connections_per_ip_per_minute",
                self.connections_per_ip_per_minute,
                1,
                1_000_000,
            ),
            (
                "slow_mode_default_seconds",
                self.slow_mode_default_seconds,
                0,
                21_600,
            ),
            ("message_bytes_max", self.message_bytes_max, 1, 65_536),
            ("history_page_max", self.history_page_max, 1, 1000),
        ];
        for (field, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(format!("settings.{field} must be between {low} and {high}"));
            }
        }
        Ok(())
    }

    /// Reads a stored version. Fields this build does not know (written by a
    /// newer one before a rollback) are dropped rather than failing, and
    /// missing ones take their defaults.
    fn from_stored(text: &str) -> Result<Self, sqlx::Error> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        if let Some(object) = value.as_object_mut() {
            let known = serde_json::to_value(RuntimeSettings::default())
                .ok()
                .and_then(|defaults| defaults.as_object().cloned())
                .unwrap_or_default();
            object.retain(|key, _| known.contains_key(key));
        }
        serde_json::from_value(value).map_err(|error| sqlx::Error::Decode(Box::new(error)))
    }
}

/// The current settings and their version (version 0 with the defaults
/// when they were never changed).
pub async fn current(db: &Database) -> Result<(i64, RuntimeSettings), sqlx::Error> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, settings FROM runtime_settings ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&db.pool)
    .await?;
    match row {
        None => Ok((0, RuntimeSettings::default())),
        Some((version, text)) => Ok((version, RuntimeSettings::from_stored(&text)?)),
    }
}

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(settings_history))
}

/// A settings version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsVersion {
    /// The version (0: never changed, the defaults).
    pub version: i64,
    /// The settings.
    pub settings: RuntimeSettings,
    /// Unix ms of the change (null for version 0).
    pub updated_at_ms: Option<i64>,
    /// The admin who made it.
    pub updated_by: Option<i64>,
}

/// `PUT /v1/admin/settings`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettings {
    /// The whole new settings; absent fields take their defaults.
    pub settings: RuntimeSettings,
    /// Apply only if this is still the current version (409 otherwise).
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// The current runtime settings (instance admins).
#[utoipa::path(get, path = "/v1/admin/settings", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "the current settings", body = SettingsVersion), AdminReadErrors))]
async fn get_settings(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SettingsVersion>, ApiError> {
    auth.require_admin()?;
    let row: Option<(i64, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT version, settings, updated_at_ms, updated_by FROM runtime_settings \
         ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&state.db.pool)
    .await?;
    Ok(Json(match row {
        None => SettingsVersion {
            version: 0,
            settings: RuntimeSettings::default(),
            updated_at_ms: None,
            updated_by: None,
        },
        Some((version, text, updated_at_ms, updated_by)) => SettingsVersion {
            version,
            settings: RuntimeSettings::from_stored(&text)?,
            updated_at_ms: Some(updated_at_ms),
            updated_by,
        },
    }))
}

/// Replaces the runtime settings (instance admins): stores them as the next
/// version and pushes the change to every data plane.
#[utoipa::path(put, path = "/v1/admin/settings", tag = "admin",
    request_body = PutSettings,
    security(("bearer" = [])),
    responses((status = 200, description = "the new version", body = SettingsVersion), AdminWriteErrors))]
async fn put_settings(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonObject(request): JsonObject<PutSettings>,
) -> Result<Json<SettingsVersion>, ApiError> {
    auth.require_admin()?;
    request.settings.validate().map_err(ApiError::validation)?;
    if request.settings.slow_mode_default_seconds > state.config.chat.slow_mode_seconds_max {
        return Err(ApiError::validation(format!(
            "settings.slow_mode_default_seconds must be at most chat.slow_mode_seconds_max ({})",
            state.config.chat.slow_mode_seconds_max
        )));
    }
    let text = serde_json::to_string(&request.settings).map_err(ApiError::internal)?;
    let now = now_ms();
    let mut transaction = state.db.begin_write().await?;
    let (current_version,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM runtime_settings")
            .fetch_one(&mut *transaction)
            .await?;
    if let Some(expected) = request.expected_version {
        if expected != current_version {
            return Err(ApiError::conflict(format!(
                "the settings are at version {current_version}, not {expected}; reload and retry"
            )));
        }
    }
    let version = current_version + 1;
    // The version is the primary key: of two concurrent changes from the
    // same version, the second inserts nothing and answers 409.
    let inserted = sqlx::query(
        "INSERT INTO runtime_settings (version, settings, updated_at_ms, updated_by) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING",
    )
    .bind(version)
    .bind(&text)
    .bind(now)
    .bind(auth.user_id)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::conflict(
            "the settings changed meanwhile; reload and retry",
        ));
    }
    transaction.commit().await?;
    state
        .events
        .publish(ControlEvent::ConfigChanged { version });
    tracing::info!(version, admin = auth.user_id, "runtime settings changed");
    Ok(Json(SettingsVersion {
        version,
        settings: request.settings,
        updated_at_ms: Some(now),
        updated_by: Some(auth.user_id),
    }))
}

/// Query of the settings history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Versions below this one (`next_before` of the last page).
    pub before: Option<i64>,
    /// Page size, 1 to `chat.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// Settings versions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsHistory {
    /// The versions.
    pub versions: Vec<SettingsVersion>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// Every stored settings version, newest first (instance admins).
#[utoipa::path(get, path = "/v1/admin/settings/history", tag = "admin",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of versions", body = SettingsHistory), AdminReadErrors))]
async fn settings_history(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<SettingsHistory>, ApiError> {
    auth.require_admin()?;
    let chat = &state.config.chat;
    let limit = page_limit(query.limit, chat.page_items_default, chat.page_items_max)?;
    let rows: Vec<(i64, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT version, settings, updated_at_ms, updated_by FROM runtime_settings \
         WHERE version < $1 ORDER BY version DESC LIMIT $2",
    )
    .bind(query.before.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let mut versions = Vec::with_capacity(rows.len());
    for (version, text, updated_at_ms, updated_by) in rows {
        versions.push(SettingsVersion {
            version,
            settings: RuntimeSettings::from_stored(&text)?,
            updated_at_ms: Some(updated_at_ms),
            updated_by,
        });
    }
    let next_before = if versions.len() as i64 > limit {
        versions.truncate(limit as usize);
        versions.last().map(|version| version.version)
    } else {
        None
    };
    Ok(Json(SettingsHistory {
        versions,
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bad_value_names_its_field() {
        RuntimeSettings::default().validate().unwrap();
        let cases: [(RuntimeSettings, &str); 4] = [
            (
                RuntimeSettings {
                    messages_per_second: f64::NAN,
                    ..Default::default()
                },
                "settings.messages_per_second",
            ),
            (
                RuntimeSettings {
                    message_burst: 0,
                    ..Default::default()
                },
                "settings.message_burst",
            ),
            (
                RuntimeSettings {
                    history_page_max: 1001,
                    ..Default::default()
                },
                "settings.history_page_max",
            ),
            (
                RuntimeSettings {
                    slow_mode_default_seconds: -1,
                    ..Default::default()
                },
                "settings.slow_mode_default_seconds",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().unwrap_err();
            assert!(error.starts_with(field), "{error}");
        }
    }

    #[test]
    fn stored_settings_from_another_build_still_load() {
        let settings =
            RuntimeSettings::from_stored(r#"{"message_burst": 20, "from_the_future": true}"#)
                .unwrap();
        assert_eq!(settings.message_burst, 20);
        assert_eq!(settings.history_page_max, 100);
    }
}
