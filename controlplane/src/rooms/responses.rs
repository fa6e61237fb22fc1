//! The error answers of the rooms routes, for the OpenAPI document: each
//! route lists one of these sets next to its success response, so the
//! document names every status the route can answer with (all with the
//! `ErrorResponse` JSON body).

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::Ref;
use utoipa::openapi::{ContentBuilder, RefOr};

pub(crate) fn error_responses(statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

const BAD_REQUEST: (u16, &str) = (
    400,
    "malformed JSON, or a path or query parameter of the wrong type",
);
const UNAUTHORIZED: (u16, &str) = (401, "missing, invalid or expired credentials");
const FORBIDDEN: (u16, &str) = (403, "the caller's role, scope or ban does not allow this");
const NOT_FOUND: (u16, &str) = (
    404,
    "no such room or user (private rooms do not exist for non-members)",
);
const CONFLICT: (u16, &str) = (409, "the request conflicts with the current state");
const TOO_LARGE: (u16, &str) = (413, "the body is over server.request_body_bytes_max");
const NOT_JSON: (u16, &str) = (415, "the body is not application/json");
const INVALID: (u16, &str) = (
    422,
    "well-formed JSON or parameters with refused values (the detail names the field), \
     including a user_id that names no user or, where a member is needed, a non-member",
);

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:ident),+) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&[$($status),+])
            }
        }
    };
}

error_set!(
    /// Reads of a room or its parts (path and query parameters, no body).
    ReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID
);
error_set!(
    /// Changes with a JSON body.
    WriteErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, TOO_LARGE, NOT_JSON, INVALID
);
error_set!(
    /// Changes without a body.
    ActionErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT
);
error_set!(
    /// Admin reads.
    AdminReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, INVALID
);
error_set!(
    /// Admin changes with a JSON body.
    AdminWriteErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, CONFLICT, TOO_LARGE, NOT_JSON, INVALID
);
