//! The `livestage` binary: reads the settings, then serves (or runs a maintenance command).

use livestage::server::config::{help_text, Settings};
use livestage::server::startup::Application;
use livestage::server::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{}", help_text());
        return std::process::ExitCode::SUCCESS;
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(settings.server.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(command) = args.first() {
        return keys::run(command, &args[1..], &settings).await;
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            eprintln!("could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let bound = std::net::SocketAddr::new(app.service().settings().server.site_addr.ip(), app.port());
    tracing::info!(port = app.port(), "listening on http://{bound}");
    let url = app.service().settings().server.public_url.as_deref().map_or_else(|| format!("http://{bound}"), str::to_string);
    if let Some(note) = app.first_start_note(&url) {
        eprintln!("{note}");
    }
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `livestage rotate-key` and `livestage delete-key <arn>`: the IVS token signing key.
mod keys {
    use livestage::server::config::Settings;
    use std::process::ExitCode;

    #[cfg(feature = "ivs")]
    pub async fn run(command: &str, rest: &[String], settings: &Settings) -> ExitCode {
        use livestage::server::backend::ivs;
        let (region, ivs_settings, data_dir) = (&settings.stage.region, &settings.ivs, &settings.server.data_dir);
        let result = match (command, rest) {
            ("rotate-key", []) => ivs::rotate_key(region, ivs_settings, data_dir).await.map(|(new, old)| {
                println!("Tokens are now signed with {new}.");
                if let Some(old) = old {
                    println!("The previous key {old} stays registered so tokens it signed keep working;");
                    println!("remove it once they have expired: livestage delete-key {old}");
                }
                println!("Restart the server to sign with the new key.");
            }),
            ("delete-key", [arn]) => {
                ivs::delete_key(region, ivs_settings, data_dir, arn).await.map(|()| println!("Deleted {arn}."))
            }
            ("delete-key", _) => {
                eprintln!("usage: livestage delete-key <public key ARN>");
                return ExitCode::from(2);
            }
            ("rotate-key", _) => {
                eprintln!("usage: livestage rotate-key");
                return ExitCode::from(2);
            }
            _ => {
                eprintln!("unknown command {command:?}; see livestage --help");
                return ExitCode::from(2);
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{command}: {e}");
                ExitCode::FAILURE
            }
        }
    }

    #[cfg(not(feature = "ivs"))]
    pub async fn run(command: &str, _rest: &[String], _settings: &Settings) -> ExitCode {
        eprintln!("{command}: this build has no IVS backend (build it with --features ivs)");
        ExitCode::from(2)
    }
}
