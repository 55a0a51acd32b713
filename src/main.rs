//! The `facteur` command: `serve`, `check-config`, `classify`, `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: delivery allocates many short-lived buffers from many
/// threads, where glibc's allocator spends a fifth of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use facteur::config::{self, Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "facteur",
    version,
    about = "Email delivery and tracking service for e-CRM"
)]
struct Cli {
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (built-in defaults when no file is given).
    Serve {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print every error with its key.
    CheckConfig {
        /// Configuration file.
        file: Option<PathBuf>,
    },
    /// Classify returned mail: one JSON line per file.
    Classify {
        /// RFC 5322 files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// GET a health URL and exit 0 when it answers 200 (for container health checks).
    Healthcheck {
        /// URL to check.
        #[arg(default_value = "http://127.0.0.1:8025/healthz")]
        url: String,
    },
}

fn load(path: Option<&std::path::Path>) -> Result<Config, config::ConfigErrors> {
    Config::load(path, std::env::vars())
}

fn init_logging(cfg: &Config, arg: Option<LogFormatArg>) {
    let format = match arg {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => cfg.log.format,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FACTEUR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load(file.as_deref()) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}", config::report(&e));
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", config::report(&e));
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg, cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(worker_threads())
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(facteur::server::run(cfg, facteur::server::signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "facteur stopped");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Classify { files } => classify(&files),
        Command::Healthcheck { url } => healthcheck(&url),
    }
}

fn classify(files: &[PathBuf]) -> ExitCode {
    match facteur::inbound::cli::run_classify(files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(url: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::FAILURE,
    };
    let ok = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .ok()?;
        let r = client.get(url).send().await.ok()?;
        Some(r.status().is_success())
    });
    if ok == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Worker threads: one more than the cores, at least three. sled's writes
/// can block a thread for a moment (a full log buffer), so a spare thread
/// keeps the other connections going; more than that only adds context
/// switches (on 2 cores, 3 workers delivered 5-10 % more than 4 in the load
/// test, runs interleaved). `TOKIO_WORKER_THREADS` overrides.
fn worker_threads() -> usize {
    if let Some(n) = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores + 1).max(3)
}
