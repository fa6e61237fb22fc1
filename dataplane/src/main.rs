//! `veza-dataplane`: the data plane binary.
//!
//! Usage: `veza-dataplane [--config PATH]`. Exit codes: 0 after a clean
//! shutdown, 1 when the server cannot start, 2 for an invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use veza_dataplane::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: veza-dataplane [--config PATH]\n\
Every key of the TOML file can be overridden with VEZA_<SECTION>_<KEY>, for example VEZA_SERVER_LISTEN_PORT=9000.\n\
--print-config prints the effective configuration and exits.\n\
--preflight checks the machine against the configuration (io_uring, limits, somaxconn, CPUs) and exits.";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut print_config = false;
    let mut preflight = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a path"),
            },
            "--print-config" => print_config = true,
            "--preflight" => preflight = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("veza-dataplane {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("veza-dataplane: {error}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", toml::to_string(&config).expect("config serialises"));
        return ExitCode::SUCCESS;
    }
    let checks = veza_dataplane::preflight::evaluate(
        &config,
        &veza_dataplane::preflight::MachineFacts::read(),
    );
    if preflight {
        veza_dataplane::preflight::print_checks(&checks);
        let failed = checks
            .iter()
            .any(|check| check.verdict == veza_dataplane::preflight::Verdict::Fail);
        return if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    init_logging(&config);
    veza_dataplane::preflight::log_checks(&checks);
    let terminate = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, terminate.clone()) {
            eprintln!("veza-dataplane: cannot install signal handler: {error}");
            return ExitCode::from(1);
        }
    }
    match veza_dataplane::server::run(config, terminate) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("veza-dataplane: {error}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("veza-dataplane: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.server.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.server.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
