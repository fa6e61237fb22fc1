//! Access-token verification on one data-plane shard, the check every
//! WebSocket upgrade and every authenticated request pays: an EdDSA token
//! signed by `veza_proto::access_token::sign`, verified the way
//! `veza_dataplane::control_client::ControlClient::verify_access_token` does
//! it (the key picked by `kid` from the pushed signing keys, a retired key
//! refused after its end, then the pushed revocations), with the shard's
//! state behind a `RefCell` as on the shard.
//!
//! The shard's own `ControlClient` cannot be used here: its keys and
//! revocations arrive only through a control plane connection. So the
//! benchmark keeps the same two maps with the same types
//! (`HashMap<kid, (VerifyingKey, Option<valid_until_ms>)>` and
//! `HashMap<jti, expires_at_ms>`) and the same lookups, and checks before
//! measuring that it accepts and refuses what the shard would.
//!
//! Groups:
//! - `token_verify`: one verification per iteration: a valid token, a
//!   revoked one (verified, then refused), a bad signature, an unknown kid,
//!   and the Ed25519 check alone on the same bytes.
//! - `token_verify_shard_batch`: [`BATCH_TOKENS`] distinct tokens verified
//!   back to back inside one shard runtime (`veza_dataplane::shard::build_runtime`,
//!   io_uring when available) on a thread pinned to one CPU; criterion's
//!   throughput line is tokens per second on that shard.
//!
//! Run: `cargo bench -p veza-bench --bench token_verify`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use veza_proto::access_token::{self, AccessTokenClaims, TokenError};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tokens per iteration of the batch group.
const BATCH_TOKENS: usize = 1024;

/// Revoked, unexpired tokens the shard knows of: a busy instance's worth
/// (the shard prunes past 4096).
const REVOCATIONS: usize = 256;

/// How long a token lives (the control plane's default access-token TTL is
/// of this order; only "not expired" matters here).
const TOKEN_TTL_SECONDS: i64 = 900;

/// Why a token was refused, as the shard says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Token(TokenError),
    Revoked,
}

/// What the control plane pushed to the shard, kept as the shard keeps it.
#[derive(Default)]
struct ShardTokenState {
    signing_keys: HashMap<String, (VerifyingKey, Option<i64>)>,
    revocations: HashMap<String, i64>,
}

/// The shard's `verify_access_token`, line for line.
fn verify_on_shard(
    state: &RefCell<ShardTokenState>,
    token: &str,
) -> Result<AccessTokenClaims, Refusal> {
    let now_ms = unix_now_ms();
    let state = state.borrow();
    let claims = access_token::verify(
        token,
        |kid| {
            let (key, valid_until_ms) = state.signing_keys.get(kid)?;
            match valid_until_ms {
                Some(until_ms) if *until_ms < now_ms => None,
                _ => Some(*key),
            }
        },
        now_ms / 1000,
    )
    .map_err(Refusal::Token)?;
    if state.revocations.contains_key(&claims.jti) {
        return Err(Refusal::Revoked);
    }
    Ok(claims)
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A current key and a retired one that still verifies, as after a
/// rotation; `REVOCATIONS` revoked token ids.
struct Fixture {
    current_key: SigningKey,
    state: RefCell<ShardTokenState>,
}

impl Fixture {
    fn new() -> Fixture {
        let current_key = SigningKey::from_bytes(&[7; 32]);
        let retired_key = SigningKey::from_bytes(&[6; 32]);
        let now_ms = unix_now_ms();
        let mut state = ShardTokenState::default();
        state
            .signing_keys
            .insert("k2".into(), (current_key.verifying_key(), None));
        state.signing_keys.insert(
            "k1".into(),
            (
                retired_key.verifying_key(),
                Some(now_ms + TOKEN_TTL_SECONDS * 1000),
            ),
        );
        for revoked_idx in 0..REVOCATIONS {
            state.revocations.insert(
                format!("revoked-{revoked_idx:08}"),
                now_ms + TOKEN_TTL_SECONDS * 1000,
            );
        }
        Fixture {
            current_key,
            state: RefCell::new(state),
        }
    }

    /// A token of user `user_id` with token id `jti`, signed with the
    /// current key, shaped like the control plane's.
    fn token(&self, user_id: i64, jti: &str) -> String {
        let now_seconds = unix_now_ms() / 1000;
        let claims = AccessTokenClaims {
            sub: user_id.to_string(),
            uid: user_id,
            name: format!("user{user_id}"),
            adm: false,
            sid: user_id * 10,
            jti: jti.into(),
            iat: now_seconds,
            exp: now_seconds + TOKEN_TTL_SECONDS,
        };
        access_token::sign(&claims, "k2", &self.current_key)
    }
}

/// A token whose last signature character is changed: it parses, then fails
/// the signature check (the full cost of a forgery).
fn with_bad_signature(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("base64url is ASCII")
}

fn single_verifications(criterion: &mut Criterion, fixture: &Fixture) {
    let valid = fixture.token(42, "0f6c1e7a-5b8d-4c2e-9a31-7d4e2b9c0a11");
    let revoked = fixture.token(42, "revoked-00000007");
    let bad_signature = with_bad_signature(&valid);
    let unknown_kid = {
        let other_key = SigningKey::from_bytes(&[9; 32]);
        let claims = verify_on_shard(&fixture.state, &valid).expect("valid");
        access_token::sign(&claims, "k9", &other_key)
    };
    let mut group = criterion.benchmark_group("token_verify");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("valid", valid.as_str(), true),
        ("revoked", revoked.as_str(), false),
        ("bad_signature", bad_signature.as_str(), false),
        ("unknown_kid", unknown_kid.as_str(), false),
    ];
    for (name, token, accepted) in cases {
        assert_eq!(
            verify_on_shard(&fixture.state, token).is_ok(),
            accepted,
            "{name}"
        );
        group.bench_function(name, |bencher| {
            bencher.iter(|| verify_on_shard(&fixture.state, black_box(token)))
        });
    }
    // The Ed25519 check alone, on the same bytes, to show how much of a
    // verification is the curve arithmetic and how much the parsing.
    let (signed_part, signature_part) = valid.rsplit_once('.').expect("three parts");
    let signature_bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature_part)
        .expect("base64url")
        .try_into()
        .expect("64 bytes");
    let signature = Signature::from_bytes(&signature_bytes);
    let public_key = fixture.current_key.verifying_key();
    group.bench_function("ed25519_verify_strict_only", |bencher| {
        bencher.iter(|| public_key.verify_strict(black_box(signed_part.as_bytes()), &signature))
    });
    group.finish();
}

fn shard_batch(criterion: &mut Criterion, fixture: &Fixture) {
    let tokens: Vec<String> = (0..BATCH_TOKENS)
        .map(|token_idx| {
            let user_id = 1000 + token_idx as i64;
            fixture.token(user_id, &format!("token-{token_idx:08}"))
        })
        .collect();
    let (mut runtime, driver) = veza_dataplane::shard::build_runtime(1024)
        .expect("a shard runtime (io_uring or epoll) can be built");
    eprintln!("token_verify_shard_batch: shard runtime driver {driver:?}");
    let mut group = criterion.benchmark_group("token_verify_shard_batch");
    group.throughput(Throughput::Elements(BATCH_TOKENS as u64));
    group.bench_function(BenchmarkId::from_parameter(BATCH_TOKENS), |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let mut accepted = 0usize;
                    for token in &tokens {
                        accepted +=
                            verify_on_shard(&fixture.state, black_box(token)).is_ok() as usize;
                    }
                    assert_eq!(accepted, BATCH_TOKENS, "every token verifies");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// Pins this thread (criterion runs every benchmark on it) to the last CPU
/// this process may use, as a shard is pinned to its core.
fn pin_to_one_cpu() -> usize {
    let cpus = veza_dataplane::shard::affinity_cpus();
    let cpu = *cpus.last().expect("at least one CPU is allowed");
    veza_dataplane::shard::pin_current_thread(cpu).expect("pin the benchmark thread");
    cpu
}

/// Checks, before anything is measured, that the benchmark's copy of the
/// shard's check accepts and refuses what the shard's does (the shard's own
/// unit test, `tokens_verify_with_pushed_keys_until_revoked_or_the_key_retires`,
/// pins the same cases). A bench target has no test harness, so this runs
/// here.
fn check_the_copy_behaves_like_the_shard() {
    let fixture = Fixture::new();
    let valid = fixture.token(5, "a-token");
    assert_eq!(
        verify_on_shard(&fixture.state, &valid).map(|claims| claims.uid),
        Ok(5)
    );
    assert_eq!(
        verify_on_shard(&fixture.state, &fixture.token(5, "revoked-00000001")),
        Err(Refusal::Revoked)
    );
    assert_eq!(
        verify_on_shard(&fixture.state, &with_bad_signature(&valid)),
        Err(Refusal::Token(TokenError::BadSignature))
    );
    fixture
        .state
        .borrow_mut()
        .signing_keys
        .get_mut("k2")
        .expect("current key")
        .1 = Some(unix_now_ms() - 1);
    assert_eq!(
        verify_on_shard(&fixture.state, &valid).map(|claims| claims.uid),
        Err(Refusal::Token(TokenError::UnknownKey)),
        "a retired key verifies nothing after its end"
    );
}

fn main() {
    check_the_copy_behaves_like_the_shard();
    let cpu = pin_to_one_cpu();
    eprintln!("token_verify: pinned to CPU {cpu}");
    let fixture = Fixture::new();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    single_verifications(&mut criterion, &fixture);
    shard_batch(&mut criterion, &fixture);
    criterion.final_summary();
}
