//! Runtime settings: versioned, admin-only, compare-and-set, validated.
//! Every test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use rooms_support::{assert_error, call, open_database, register, start};
use serde_json::json;
use support::BACKENDS;
use veza_controlplane::rooms::settings::{current, RuntimeSettings};

#[tokio::test]
async fn each_change_is_a_new_version_and_a_stale_version_is_refused() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let admin = register(&server, "root").await;
        let db = open_database(&server).await;
        assert_eq!(current(&db).await.unwrap(), (0, RuntimeSettings::default()));
        let (status, initial) = call(&server, &admin, "GET", "/v1/admin/settings", None).await;
        assert_eq!(status, 200, "{backend:?} {initial}");
        assert_eq!(initial["version"], 0);
        assert_eq!(
            initial["settings"],
            json!({"messages_per_second": 5.0, "message_burst": 10, "connections_per_ip_per_minute": 60,
                   "slow_mode_default_seconds": 0, "message_bytes_max": 4000, "history_page_max": 100})
        );

        let (status, first) = call(
            &server,
            &admin,
            "PUT",
            "/v1/admin/settings",
            Some(json!({"settings": {"message_burst": 20, "messages_per_second": 2.5}})),
        )
        .await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(
            (first["version"].as_i64(), first["updated_by"].as_i64()),
            (Some(1), Some(admin.id))
        );
        assert_eq!(
            first["settings"]["history_page_max"], 100,
            "absent fields take their defaults"
        );
        let (status, second) = call(
            &server,
            &admin,
            "PUT",
            "/v1/admin/settings",
            Some(json!({"settings": {"slow_mode_default_seconds": 10}, "expected_version": 1})),
        )
        .await;
        assert_eq!(
            (status, second["version"].as_i64()),
            (200, Some(2)),
            "{second}"
        );
        let (status, body) = call(
            &server,
            &admin,
            "PUT",
            "/v1/admin/settings",
            Some(json!({"settings": {}, "expected_version": 1})),
        )
        .await;
        assert_error(status, &body, 409, "a stale expected_version");

        let (version, settings) = current(&db).await.unwrap();
        assert_eq!(
            (
                version,
                settings.slow_mode_default_seconds,
                settings.message_burst
            ),
            (2, 10, 10)
        );
        let (_, history) = call(&server, &admin, "GET", "/v1/admin/settings/history", None).await;
        let versions: Vec<i64> = history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, [2, 1]);
        assert_eq!(history["versions"][1]["settings"]["message_burst"], 20);
        let (_, page) = call(
            &server,
            &admin,
            "GET",
            "/v1/admin/settings/history?limit=1",
            None,
        )
        .await;
        assert_eq!(
            (
                page["versions"][0]["version"].as_i64(),
                page["next_before"].as_i64()
            ),
            (Some(2), Some(2))
        );

        let (status, room) = call(
            &server,
            &admin,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "Default pace", "is_public": true})),
        )
        .await;
        assert_eq!(
            (status, room["slow_mode_seconds"].as_i64()),
            (201, Some(10)),
            "new rooms take slow_mode_default_seconds"
        );
    }
}

#[tokio::test]
async fn bad_values_name_their_field_and_only_instance_admins_may_change_settings() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let admin = register(&server, "root").await;
        let user = register(&server, "user").await;
        let refused = [
            (
                json!({"settings": {"message_burst": 0}}),
                422,
                "message_burst",
            ),
            (
                json!({"settings": {"messages_per_second": 0.0}}),
                422,
                "messages_per_second",
            ),
            (
                json!({"settings": {"history_page_max": 5000}}),
                422,
                "history_page_max",
            ),
            (
                json!({"settings": {"message_bytes_max": -1}}),
                422,
                "message_bytes_max",
            ),
            (
                json!({"settings": {"connections_per_ip_per_minute": 0}}),
                422,
                "connections_per_ip_per_minute",
            ),
            (
                json!({"settings": {"slow_mode_default_seconds": 99_999}}),
                422,
                "slow_mode_default_seconds",
            ),
            (
                json!({"settings": {"message_burst": "lots"}}),
                422,
                "message_burst",
            ),
            (json!({"settings": {"warp_speed": 9}}), 422, "warp_speed"),
            (json!({"settings": {}, "force": true}), 422, "force"),
            (json!({"expected_version": 0}), 422, "settings"),
        ];
        for (body, expected, field) in refused {
            let (status, answer) = call(
                &server,
                &admin,
                "PUT",
                "/v1/admin/settings",
                Some(body.clone()),
            )
            .await;
            assert_error(status, &answer, expected, &format!("{backend:?} {body}"));
            assert!(
                answer["detail"].as_str().unwrap().contains(field),
                "{body}: {answer}"
            );
        }
        let (status, body) = call(
            &server,
            &user,
            "PUT",
            "/v1/admin/settings",
            Some(json!({"settings": {}})),
        )
        .await;
        assert_error(status, &body, 403, "not an instance admin");
        for path in ["/v1/admin/settings", "/v1/admin/settings/history"] {
            let (status, body) = call(&server, &user, "GET", path, None).await;
            assert_error(status, &body, 403, path);
            let (status, body) = server.request("GET", path, None, None).await;
            assert_error(status, &body, 401, path);
        }
        let (_, settings) = call(&server, &admin, "GET", "/v1/admin/settings", None).await;
        assert_eq!(settings["version"], 0, "nothing was stored");
    }
}
