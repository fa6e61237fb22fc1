//! Full-text search in a room: FTS5 on SQLite, a tsvector with a GIN index
//! on PostgreSQL (migrations 0006). The query is cut into words here, the
//! same way on both databases, and every word must match (no operators), so
//! nothing a user types can change the shape of the search: quotes, `OR`,
//! `*`, `--` or `'; DROP TABLE` are just more words or nothing. Deleted
//! messages have no words and are also filtered out explicitly.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::messages::{attach_reactions, MessageView, StoredMessage, MESSAGE_COLUMNS};
use super::permissions::access;
use super::request::{check_text, page_limit, Path, Query};
use super::responses::ReadErrors;
use crate::accounts::{scopes, Authenticated};
use crate::db::{Backend, Database};
use crate::error::{ApiError, Json};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_messages))
}

/// The words of a query: runs of letters and digits, lowercased, without
/// repeats. Both indexes split text at the same places for these.
pub(crate) fn search_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|character: char| !character.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

/// An FTS5 query matching every term: each one a quoted string, so FTS5
/// syntax in it is literal text.
fn fts5_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Messages of `room_id` containing every word of `raw_query` (cut into
/// `terms` by [`search_terms`]), newest first.
pub(crate) async fn search(
    db: &Database,
    room_id: i64,
    raw_query: &str,
    terms: &[String],
    limit: i64,
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, query) = match db.backend() {
        Backend::Sqlite => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages_fts f JOIN messages m ON m.id = f.rowid \
                 WHERE messages_fts MATCH $2 AND m.room_id = $1 AND m.deleted_at_ms IS NULL \
                 ORDER BY m.seq DESC LIMIT $3"
            ),
            fts5_query(terms),
        ),
        // plainto_tsquery ANDs the words of plain text and has no syntax of
        // its own. It gets the raw text so that its parser splits it as it
        // split the indexed bodies (it keeps "3.14" or an e-mail address as
        // one word, where the terms above would not).
        Backend::Postgres => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m \
                 WHERE m.room_id = $1 AND m.body_search @@ plainto_tsquery('simple', $2) \
                   AND m.deleted_at_ms IS NULL \
                 ORDER BY m.seq DESC LIMIT $3"
            ),
            raw_query.to_string(),
        ),
    };
    let rows = sqlx::query_as(&sql)
        .bind(room_id)
        .bind(query)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    let mut messages: Vec<StoredMessage> = rows.into_iter().map(super::messages::stored).collect();
    // Reactions are attached per message: results are not a seq range.
    for message in messages.iter_mut() {
        attach_reactions(db, room_id, std::slice::from_mut(message)).await?;
    }
    Ok(messages)
}

/// Query of a search.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to find (all of them), up to `chat.search_query_chars_max`
    /// characters and `chat.search_terms_max` words.
    pub q: String,
    /// Most results: default and largest `chat.search_results_max`.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// Search results, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// The words searched for, as understood.
    pub terms: Vec<String>,
    /// Matching messages (deleted ones never match).
    pub messages: Vec<MessageView>,
}

/// Finds messages containing every word of `q` (members, or anyone for a
/// public room).
#[utoipa::path(get, path = "/v1/rooms/{room_id}/messages/search", tag = "messages",
    params(("room_id" = i64, Path, description = "The room id"), SearchQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "matching messages", body = SearchResults), ReadErrors))]
async fn search_messages(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    auth.require_scope(scopes::MESSAGES_READ)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_readable()?;
    let chat = &state.config.chat;
    check_text("q", &query.q, chat.search_query_chars_max)?;
    let terms = search_terms(&query.q);
    if terms.len() > chat.search_terms_max {
        return Err(ApiError::validation(format!(
            "q must have at most {} words",
            chat.search_terms_max
        )));
    }
    let limit = page_limit(
        query.limit,
        chat.search_results_max,
        chat.search_results_max,
    )?;
    let messages = search(&state.db, room_id, &query.q, &terms, limit).await?;
    Ok(Json(SearchResults {
        terms,
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, expected_terms: &[&str], expected_fts5: &str) {
        let terms = search_terms(query);
        assert_eq!(terms, expected_terms, "terms of {query:?}");
        assert_eq!(fts5_query(&terms), expected_fts5, "FTS5 query of {query:?}");
    }

    #[test]
    fn queries_become_plain_words_whatever_their_syntax() {
        check("Hello world", &["hello", "world"], "\"hello\" \"world\"");
        check(
            "'; DROP TABLE messages; --",
            &["drop", "table", "messages"],
            "\"drop\" \"table\" \"messages\"",
        );
        check(
            "\"quoted\" OR NEAR(a b) *",
            &["quoted", "or", "near", "a", "b"],
            "\"quoted\" \"or\" \"near\" \"a\" \"b\"",
        );
        check("échec ÉCHEC", &["échec"], "\"échec\"");
        check("%%% ___ ''", &[], "");
        check("", &[], "");
    }
}
