use std::process::ExitCode;

use clap::Parser;
use equipoise::CliError;
use equipoise::cli::{
    AuditCommand, Cli, Command, ListCommand, SeedCommand, TokenCommand, client, offline, simulate,
};
use equipoise::serve;
use equipoise::settings::Settings;
use equipoise_common::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("equipoise: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<String, CliError> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { target } => {
            let telemetry = telemetry::init(
                settings.log_format,
                target.service_name(),
                &telemetry::OtlpExport::from_environment(),
            )?;
            let served = serve_target(&settings, target).await;
            telemetry.shutdown().await;
            served?;
            Ok(String::new())
        }
        Command::Token {
            command: TokenCommand::Mint(args),
        } => Ok(format!("{}\n", offline::mint(&settings, &args)?)),
        Command::Audit {
            command: AuditCommand::Verify { service, head },
        } => {
            let head = head.as_deref().map(offline::read_head).transpose()?;
            let verified = offline::audit_verify(&settings, service, head.as_ref()).await?;
            let extends = head.map_or(String::new(), |h| {
                format!("; it extends the exported head at record {}", h.seq)
            });
            let notes: String = verified
                .notes
                .iter()
                .map(|note| format!("note: {note}\n"))
                .collect();
            Ok(format!(
                "audit chain verified: {} records{extends}\n{notes}",
                verified.records
            ))
        }
        Command::Audit {
            command: AuditCommand::Export { service },
        } => offline::audit_export(&settings, service).await,
        Command::Audit {
            command: AuditCommand::Head { service },
        } => {
            let head = offline::audit_head(&settings, service).await?;
            let line = serde_json::to_string(&head).map_err(|e| CliError::Usage(e.to_string()))?;
            Ok(format!("{line}\n"))
        }
        Command::List {
            command: ListCommand::Regenerate(args),
        } => offline::regenerate(&args),
        Command::Seed {
            command:
                SeedCommand::Unseal {
                    trial,
                    token,
                    reason,
                },
        } => Ok(format!(
            "{}\n",
            offline::unseal(&settings, &trial, &token, reason.as_deref())
                .await?
                .to_hex()
        )),
        Command::Simulate(args) => tokio::task::spawn_blocking(move || simulate::run(&args))
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?,
        Command::Client(args) => client::run(args).await,
    }
}

async fn serve_target(settings: &Settings, target: serve::Target) -> Result<(), CliError> {
    let listener = serve::bind(settings).await?;
    serve::run(
        settings,
        target,
        listener,
        equipoise_common::serve::shutdown_signal(),
    )
    .await?;
    Ok(())
}
