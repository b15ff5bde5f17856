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
    telemetry::init(&settings.server.log_format);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            eprintln!("could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = app.service().settings().server.site_addr.clone();
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    tracing::info!(port = app.port(), "listening on http://{host}:{}", app.port());
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            std::process::ExitCode::FAILURE
        }
    }
}
