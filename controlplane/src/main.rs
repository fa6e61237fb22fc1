//! `veza-controlplane`: the control plane binary.
//!
//! Usage: `veza-controlplane [--config PATH]`. Exit codes: 0 after a clean
//! shutdown, 1 when it cannot start, 2 for an invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use veza_controlplane::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: veza-controlplane [--config PATH] [--print-config]\n\
Every key of the TOML file can be overridden with VEZA_<SECTION>_<KEY>, for example VEZA_SERVER_LISTEN_PORT=9081.";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut print_config = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a path"),
            },
            "--print-config" => print_config = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("veza-controlplane {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("veza-controlplane: {error}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", toml::to_string(&config).expect("config serialises"));
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("veza-control")
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let state = veza_controlplane::server::build_state(config).await?;
        veza_controlplane::server::serve(state, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "control plane failed");
            eprintln!("veza-controlplane: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("signal received: shutting down");
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("veza-controlplane: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.server.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.server.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
