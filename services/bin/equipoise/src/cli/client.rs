//! `equipoise client`: a small gRPC client for the walkthrough and for
//! operators, so no other tool is needed to talk to a server.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use equipoise_common::error::RemoteError;
use equipoise_common::grpc::client::{self, ClientInterceptor, Timeouts};
use equipoise_common::grpc::tls;
use equipoise_common::tls::{
    PemKind, PemPair, TlsError, TlsSettings, install_crypto_provider, read_pem,
};
use equipoise_proto::blinding::v1::blinding_service_client::BlindingServiceClient;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_proto::safety::v1::safety_service_client::SafetyServiceClient;
use pb::randomisation_service_client::RandomisationServiceClient;
use tonic::transport::ClientTlsConfig;

use super::desk::{self, DeskCall};
use super::safety::{self, SafetyCall};
use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[arg(
        long,
        env = "EQUIPOISE_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Bearer token (see `equipoise token mint`): `-` reads it from standard
    /// input and `@FILE` from a file, so it need not appear in argv; or set
    /// EQUIPOISE_TOKEN.
    #[arg(long, env = "EQUIPOISE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    #[command(subcommand)]
    pub call: Call,
}

/// TLS to a server with `[tls]` configured (docs/tls.md).
#[derive(Debug, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA bundle to check the server's certificate against. Given, the
    /// call goes over TLS (an http:// endpoint is called as https://).
    #[arg(long, env = "EQUIPOISE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one.
    #[arg(long, env = "EQUIPOISE_CLIENT_CERT", requires_all = ["key", "ca_cert"])]
    pub cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, env = "EQUIPOISE_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name expected in the server's certificate; default: the
    /// endpoint's host.
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The endpoint to call, and the TLS configuration to call it with.
    fn connection(&self, endpoint: &str) -> Result<(String, Option<ClientTlsConfig>), CliError> {
        let Some(ca_path) = &self.ca_cert else {
            if endpoint.to_ascii_lowercase().starts_with("https://") {
                return Err(CliError::Usage(
                    "--ca-cert is needed for an https:// endpoint: the CA its certificate is checked against".into(),
                ));
            }
            return Ok((endpoint.to_owned(), None));
        };
        let usage = |e: TlsError| CliError::Usage(e.to_string());
        let settings = TlsSettings {
            ca_file: Some(ca_path.clone()),
            ..TlsSettings::default()
        };
        let endpoint = settings
            .service_url("--endpoint", endpoint)
            .map_err(usage)?;
        let ca = read_pem("--ca-cert", ca_path, PemKind::Certificates).map_err(usage)?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(PemPair {
                cert: read_pem("--cert", cert, PemKind::Certificates).map_err(usage)?,
                key: read_pem("--key", key, PemKind::PrivateKey).map_err(usage)?,
            }),
            _ => None,
        };
        let config = tls::client_config(&ca, identity.as_ref(), self.tls_server_name.as_deref());
        Ok((endpoint, Some(config)))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Call {
    #[command(flatten)]
    Randomisation(RandomisationCall),
    #[command(flatten)]
    Desk(DeskCall),
    #[command(flatten)]
    Safety(SafetyCall),
}

/// Calls to the randomisation service.
#[derive(Debug, clap::Subcommand)]
pub enum RandomisationCall {
    /// Register a definition file as a draft.
    Register {
        definition: PathBuf,
    },
    /// Activate a draft, optionally confirming the hash you reviewed.
    Activate {
        trial: String,
        #[arg(long, default_value = "")]
        sha256: String,
    },
    GetTrial {
        trial: String,
    },
    Close {
        trial: String,
        #[arg(long)]
        reason: String,
    },
    /// Randomise a subject: --covariate name=value, typed as written
    /// (45 integer, 72.5 decimal, true/false boolean, anything else enum).
    Randomise {
        #[arg(long)]
        trial: String,
        #[arg(long)]
        site: String,
        #[arg(long)]
        subject: String,
        #[arg(long = "covariate")]
        covariates: Vec<String>,
    },
    Allocation {
        trial: String,
        subject: String,
    },
    Status {
        trial: String,
    },
}

pub async fn run(args: ClientArgs) -> Result<String, CliError> {
    let usage = |e: client::ClientError| CliError::Usage(e.to_string());
    let token = super::offline::secret_argument("--token", &args.token)?;
    let interceptor = ClientInterceptor::bearer(&token).map_err(usage)?;
    let (endpoint, tls) = args.tls.connection(&args.endpoint)?;
    install_crypto_provider();
    let channel = client::connect_with_tls(&endpoint, Timeouts::default(), tls)
        .await
        .map_err(usage)?;
    let channel = client::authenticated(channel, interceptor);
    match args.call {
        Call::Randomisation(call) => {
            randomisation(RandomisationServiceClient::new(channel), call).await
        }
        Call::Desk(call) => desk::run(BlindingServiceClient::new(channel), call).await,
        Call::Safety(call) => safety::run(SafetyServiceClient::new(channel), call).await,
    }
}

async fn randomisation(
    mut client: RandomisationServiceClient<client::AuthenticatedChannel>,
    call: RandomisationCall,
) -> Result<String, CliError> {
    let output = match call {
        RandomisationCall::Register { definition } => {
            let yaml = std::fs::read_to_string(&definition)
                .map_err(|e| CliError::Usage(format!("{}: {e}", definition.display())))?;
            trial(
                client
                    .register_trial(pb::RegisterTrialRequest {
                        definition_yaml: yaml,
                    })
                    .await?
                    .into_inner(),
            )
        }
        RandomisationCall::Activate { trial: id, sha256 } => trial(
            client
                .activate_trial(pb::ActivateTrialRequest {
                    trial_id: id,
                    expected_definition_sha256: sha256,
                })
                .await?
                .into_inner(),
        ),
        RandomisationCall::GetTrial { trial: id } => trial(
            client
                .get_trial(pb::GetTrialRequest { trial_id: id })
                .await?
                .into_inner(),
        ),
        RandomisationCall::Close { trial: id, reason } => trial(
            client
                .close_enrolment(pb::CloseEnrolmentRequest {
                    trial_id: id,
                    reason,
                })
                .await?
                .into_inner(),
        ),
        RandomisationCall::Randomise {
            trial,
            site,
            subject,
            covariates,
        } => {
            let request = pb::RandomiseRequest {
                trial_id: trial,
                site_id: site,
                subject_id: subject,
                covariates: parse_covariates(&covariates)?,
            };
            let response = client.randomise(request).await?.into_inner();
            let mut out = allocation(response.allocation.unwrap_or_default());
            let _ = writeln!(out, "replayed:             {}", response.replayed);
            out
        }
        RandomisationCall::Allocation { trial, subject } => allocation(
            client
                .get_allocation(pb::GetAllocationRequest {
                    trial_id: trial,
                    subject_id: subject,
                })
                .await?
                .into_inner(),
        ),
        RandomisationCall::Status { trial } => status(
            client
                .get_trial_status(pb::GetTrialStatusRequest { trial_id: trial })
                .await?
                .into_inner(),
        ),
    };
    Ok(output)
}

fn parse_covariates(items: &[String]) -> Result<HashMap<String, pb::CovariateValue>, CliError> {
    use pb::covariate_value::Value;
    items
        .iter()
        .map(|item| {
            let (name, text) = item.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("--covariate '{item}' is not name=value"))
            })?;
            let value = if let Ok(n) = text.parse::<i64>() {
                Value::IntegerValue(n)
            } else if let Ok(x) = text.parse::<f64>() {
                Value::DecimalValue(x)
            } else if let Ok(b) = text.parse::<bool>() {
                Value::BooleanValue(b)
            } else {
                Value::EnumValue(text.to_owned())
            };
            Ok((name.to_owned(), pb::CovariateValue { value: Some(value) }))
        })
        .collect()
}

fn trial(trial: pb::Trial) -> String {
    let state = pb::TrialState::try_from(trial.state).map_or("unknown", |s| s.as_str_name());
    format!(
        "trial:                {} v{}\nstate:                {state}\nmethod:               {}\ndefinition_sha256:    {}\nsites:                {}\n",
        trial.trial_id,
        trial.version,
        trial.method,
        trial.definition_sha256,
        trial.site_ids.join(", ")
    )
}

fn allocation(allocation: pb::Allocation) -> String {
    let at = allocation
        .randomised_at
        .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut out = format!(
        "subject:              {}\nsite:                 {}\nrandomisation_number: {}\nstratum:              {}\nrandomised_at:        {at}\n",
        allocation.subject_id,
        allocation.site_id,
        allocation.randomisation_number,
        allocation.stratum
    );
    if !allocation.corrected_stratum.is_empty() {
        let _ = writeln!(
            out,
            "corrected_stratum:    {}",
            allocation.corrected_stratum
        );
    }
    let code = if allocation.treatment_code.is_empty() {
        "(pending)"
    } else {
        allocation.treatment_code.as_str()
    };
    let _ = writeln!(out, "treatment_code:       {code}");
    if allocation.randomised_in_error {
        let _ = writeln!(out, "randomised_in_error:  {}", allocation.error_reason);
    }
    out
}

fn status(status: pb::TrialStatus) -> String {
    let mut out = format!(
        "trial {}: {} randomised (cap {})\n",
        status.trial_id, status.randomised, status.total_cap
    );
    for site in &status.sites {
        let _ = writeln!(
            out,
            "  site    {:<40} {:>4} / {}",
            site.site_id, site.randomised, site.cap
        );
    }
    for stratum in &status.strata {
        let _ = writeln!(
            out,
            "  stratum {:<40} {:>4}",
            stratum.stratum, stratum.randomised
        );
    }
    out
}

/// A refused call, with the fields or conditions the server named.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    match RemoteError::from_status(status) {
        RemoteError::InvalidArgument { violations, .. } => {
            for violation in &violations {
                let _ = write!(out, "\n  {}: {}", violation.field, violation.description);
            }
        }
        RemoteError::FailedPrecondition { violations, .. } => {
            for violation in &violations {
                let _ = write!(
                    out,
                    "\n  {} {}: {}",
                    violation.kind, violation.subject, violation.description
                );
            }
        }
        _ => {}
    }
    out
}
