//! The error answers of the social routes, for the OpenAPI document (each
//! route lists one set beside its success response).

use crate::rooms::responses::error_responses;

const BAD_REQUEST: (u16, &str) = (
    400,
    "malformed JSON, or a path or query parameter of the wrong type",
);
const UNAUTHORIZED: (u16, &str) = (401, "missing, invalid or expired credentials");
const FORBIDDEN: (u16, &str) = (
    403,
    "an API key (social routes need a user's access token), or something the caller may see but does not own",
);
const NOT_FOUND: (u16, &str) = (
    404,
    "no such track, playlist, user, comment or position (private and unprocessed tracks \
     of others, and private playlists of others, do not exist for the caller)",
);
const CONFLICT: (u16, &str) = (
    409,
    "a bound was reached (the error names it), the track is already in the playlist, \
     or the track is not processed yet",
);
const TOO_LARGE: (u16, &str) = (413, "the body is over server.request_body_bytes_max");
const NOT_JSON: (u16, &str) = (415, "the body is not application/json");
const INVALID: (u16, &str) = (
    422,
    "well-formed JSON or parameters with refused values (the detail names the field)",
);

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:ident),+) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                error_responses(&[$($status),+])
            }
        }
    };
}

error_set!(
    /// Reads (path and query parameters, no body).
    ReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID
);
error_set!(
    /// Changes with a JSON body.
    WriteErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, TOO_LARGE, NOT_JSON, INVALID
);
error_set!(
    /// Changes without a body.
    ActionErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, INVALID
);
