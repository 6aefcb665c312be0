//! Command-line syntax (clap derive). Only parsing lives here; what each
//! command does is in `commands`.
//!
//! None of these types derive `Debug`: some hold secrets (the admin token, a
//! provider's API key) that must never be printed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the control plane writes its generated admin token on a
/// zero-config first start.
pub const DEFAULT_TOKEN_FILE: &str = "./data/admin-token";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9090";
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "llmgw",
    version,
    about = "Manage an llmgw gateway through its control plane's admin API",
    long_about = "Manage an llmgw gateway through its control plane's admin API: \
        providers, models, client API keys, data planes and the configuration \
        as a whole (export / apply).",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct GlobalOpts {
    /// Admin gRPC URL of the control plane; https:// URLs use TLS.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "LLMGW_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,

    /// PEM file with the CA certificate(s) to trust for an https:// server,
    /// instead of the system's trusted roots.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "LLMGW_TLS_CA",
        value_name = "FILE"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Admin token, sent as `authorization: Bearer <token>`. Prefer the
    /// environment variable or the token file: command-line arguments are
    /// visible to other local users.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "LLMGW_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// File to read the admin token from when no --token is given (the
    /// control plane writes its generated token there on a zero-config first
    /// start). Surrounding whitespace is ignored.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "LLMGW_ADMIN_TOKEN_FILE",
        default_value = DEFAULT_TOKEN_FILE,
        value_name = "FILE"
    )]
    pub token_file: PathBuf,

    /// Output format: aligned columns for people, or pretty JSON for scripts
    /// (lists print as a JSON array).
    #[arg(
        short,
        long,
        global = true,
        help_heading = GLOBAL,
        env = "LLMGW_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table,
        value_name = "FORMAT"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Manage upstream providers (where requests are sent).
    #[command(subcommand, visible_alias = "providers")]
    Provider(ProviderCmd),
    /// Manage models (the names clients ask for) and their targets.
    #[command(subcommand, visible_alias = "models")]
    Model(ModelCmd),
    /// Manage client API keys.
    #[command(subcommand, visible_alias = "keys")]
    Key(KeyCmd),
    /// List the data planes connected to the control plane, with the
    /// configuration version each has acknowledged.
    #[command(visible_alias = "dataplane")]
    Dataplanes,
    /// Print the whole configuration as YAML (JSON with -o json); secrets
    /// are masked. `llmgw export > gateway.yaml` gives a file for `apply`.
    Export,
    /// Make the gateway's configuration exactly what a file says: providers,
    /// models and keys absent from the file are deleted.
    Apply(ApplyArgs),
}

// ---------- providers ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Openai,
    Anthropic,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Openai => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }
}

/// One `--header K:V`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Subcommand)]
pub enum ProviderCmd {
    /// Create a provider.
    Add(ProviderAddArgs),
    /// List providers.
    #[command(visible_alias = "ls")]
    List,
    /// Show one provider.
    Get(NameArg),
    /// Change a provider; options not given stay as they are (give at least one).
    #[command(override_usage = "llmgw provider update [OPTIONS] <NAME>")]
    Update(ProviderUpdateArgs),
    /// Delete a provider.
    #[command(visible_alias = "rm")]
    Delete(NameArg),
}

#[derive(Args)]
pub struct NameArg {
    /// Name of the resource.
    pub name: String,
}

#[derive(Args)]
pub struct ProviderAddArgs {
    /// Name of the new provider, used in model targets.
    pub name: String,
    /// Wire protocol the upstream speaks.
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Base URL of the upstream API, e.g. https://api.openai.com/v1.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// API key for the upstream; stored encrypted and shown masked.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Extra header sent upstream, as NAME:VALUE (split at the first ':',
    /// both sides trimmed). Repeat for more headers.
    #[arg(long = "header", value_name = "K:V", value_parser = parse_header)]
    pub headers: Vec<Header>,
    /// Upstream timeout in seconds; 0 or absent means the global default.
    #[arg(long, value_name = "N")]
    pub timeout_s: Option<u32>,
    /// Create the provider disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Do not ask OpenAI chat streams for usage (stream_options.include_usage).
    #[arg(long)]
    pub no_stream_usage: bool,
}

#[derive(Args)]
pub struct ProviderUpdateArgs {
    /// Name of the provider to change.
    pub name: String,
    #[command(flatten)]
    pub changes: ProviderChanges,
}

#[derive(Args)]
#[group(required = true, multiple = true)]
pub struct ProviderChanges {
    /// New wire protocol.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// New base URL.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// New upstream API key; an empty string removes the key.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Extra header as NAME:VALUE; when given, the headers given replace all
    /// extra headers. Repeat for more headers.
    #[arg(
        long = "header",
        value_name = "K:V",
        value_parser = parse_header,
        conflicts_with = "clear_headers"
    )]
    pub headers: Vec<Header>,
    /// Remove every extra header.
    #[arg(long)]
    pub clear_headers: bool,
    /// Upstream timeout in seconds; 0 means the global default.
    #[arg(long, value_name = "N")]
    pub timeout_s: Option<u32>,
    /// Enable the provider.
    #[arg(long, visible_alias = "enabled", conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the provider.
    #[arg(long, visible_alias = "disabled")]
    pub disable: bool,
    /// Whether to ask OpenAI chat streams for usage.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub stream_usage: Option<bool>,
}

// ---------- models ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    Priority,
    RoundRobin,
    Weighted,
    LeastLatency,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
        }
    }
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Create a model.
    Add(ModelAddArgs),
    /// List models.
    #[command(visible_alias = "ls")]
    List,
    /// Show one model and its targets.
    Get(NameArg),
    /// Change a model; options not given stay as they are (give at least one).
    #[command(override_usage = "llmgw model update [OPTIONS] <NAME>")]
    Update(ModelUpdateArgs),
    /// Delete a model.
    #[command(visible_alias = "rm")]
    Delete(NameArg),
}

#[derive(Args)]
pub struct ModelAddArgs {
    /// Name clients use for the model.
    pub name: String,
    /// Target as PROVIDER[:UPSTREAM_MODEL]; the upstream model is everything
    /// after the first ':' and defaults to the model's name. Repeat in
    /// priority order: the first target gets priority 0, the next 1, ...
    #[arg(
        long = "target",
        value_name = "PROVIDER[:UPSTREAM_MODEL]",
        required = true
    )]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub common: ModelOpts,
    /// Create the model disabled.
    #[arg(long)]
    pub disabled: bool,
}

/// Options shared by `model add` and `model update`.
#[derive(Args)]
pub struct ModelOpts {
    /// How to choose among targets of equal priority [default: priority].
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// One weight per target, comma separated, in target order (default 1 each).
    #[arg(long, value_name = "W,W,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..))]
    pub weights: Option<Vec<u32>>,
    /// Attempts per target; 0 or absent means the global default.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts on one target, in milliseconds.
    #[arg(long, value_name = "N")]
    pub retry_delay_ms: Option<u32>,
    /// Price of input tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "X", value_parser = parse_price, requires = "price_output")]
    pub price_input: Option<f64>,
    /// Price of output tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "Y", value_parser = parse_price, requires = "price_input")]
    pub price_output: Option<f64>,
    /// Price of cached input tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "Z", value_parser = parse_price, requires = "price_input")]
    pub price_cached_input: Option<f64>,
}

#[derive(Args)]
pub struct ModelUpdateArgs {
    /// Name of the model to change.
    pub name: String,
    #[command(flatten)]
    pub changes: ModelChanges,
}

#[derive(Args)]
#[group(required = true, multiple = true)]
pub struct ModelChanges {
    /// Target as PROVIDER[:UPSTREAM_MODEL]; when given, the targets given
    /// replace all targets (in priority order, like `model add`).
    #[arg(long = "target", value_name = "PROVIDER[:UPSTREAM_MODEL]")]
    pub targets: Vec<String>,
    /// New strategy.
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// One weight per target, comma separated. Without --target, sets the
    /// weights of the model's current targets.
    #[arg(long, value_name = "W,W,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..))]
    pub weights: Option<Vec<u32>>,
    /// Attempts per target; 0 means the global default.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts on one target, in milliseconds.
    #[arg(long, value_name = "N", conflicts_with = "clear_retry_delay")]
    pub retry_delay_ms: Option<u32>,
    /// Remove the retry delay override, so the global default applies.
    #[arg(long)]
    pub clear_retry_delay: bool,
    /// Price of input tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "X", value_parser = parse_price, requires = "price_output")]
    pub price_input: Option<f64>,
    /// Price of output tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "Y", value_parser = parse_price, requires = "price_input")]
    pub price_output: Option<f64>,
    /// Price of cached input tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "Z", value_parser = parse_price, requires = "price_input")]
    pub price_cached_input: Option<f64>,
    /// Enable the model.
    #[arg(long, visible_alias = "enabled", conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the model.
    #[arg(long, visible_alias = "disabled")]
    pub disable: bool,
}

// ---------- keys ----------

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a client API key; its secret is printed once.
    Create(KeyCreateArgs),
    /// List client API keys.
    #[command(visible_alias = "ls")]
    List,
    /// Show one client API key.
    Get(NameArg),
    /// Revoke a key: it stays listed but stops working.
    Revoke(NameArg),
    /// Delete a key.
    #[command(visible_alias = "rm")]
    Delete(NameArg),
}

#[derive(Args)]
pub struct KeyCreateArgs {
    /// Name of the new key.
    pub name: String,
    /// Models the key may use, comma separated; absent means all models.
    #[arg(long, value_name = "M,M,...", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Lifetime, e.g. 30d, 12h, 1y 2months; absent means the key never expires.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub expires_in: Option<u64>,
    /// Do not record request and response bodies for this key's requests.
    #[arg(long)]
    pub no_log_bodies: bool,
}

// ---------- apply ----------

#[derive(Args)]
pub struct ApplyArgs {
    /// Configuration file in YAML or JSON, as `llmgw export` writes it;
    /// `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
    /// Report the changes without making them.
    #[arg(long)]
    pub dry_run: bool,
}

// ---------- value parsers ----------

/// `K:V`, split at the first ':', both sides trimmed.
pub fn parse_header(s: &str) -> Result<Header, String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err(format!("expected NAME:VALUE, got `{s}` (no ':')"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("header name is empty in `{s}`"));
    }
    Ok(Header {
        name: name.to_string(),
        value: value.trim().to_string(),
    })
}

/// A non-negative, finite price.
pub fn parse_price(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("a price must be a non-negative number, got `{s}`"));
    }
    Ok(v)
}

/// A humantime duration (`30d`, `12h`, `1y 2months`) in whole seconds, at
/// least one.
pub fn parse_lifetime(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    match d.as_secs() {
        0 => Err(format!("`{s}` is shorter than one second")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_header("X-Team: research").unwrap(),
            Header {
                name: "X-Team".into(),
                value: "research".into()
            }
        );
        // Only the first ':' splits; the value may hold more.
        assert_eq!(
            parse_header(" Referer :https://x.example:8443/a ").unwrap(),
            Header {
                name: "Referer".into(),
                value: "https://x.example:8443/a".into()
            }
        );
        assert_eq!(parse_header("X-Empty:").unwrap().value, "");
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header(" : value").is_err());
    }

    #[test]
    fn lifetime_parsing() {
        assert_eq!(parse_lifetime("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_lifetime("1h 30m").unwrap(), 5_400);
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("soon").is_err());
    }

    #[test]
    fn price_parsing() {
        assert_eq!(parse_price("2.5").unwrap(), 2.5);
        assert!(parse_price("-1").is_err());
        assert!(parse_price("NaN").is_err());
        assert!(parse_price("abc").is_err());
    }

    #[test]
    fn header_without_colon_is_a_usage_error() {
        let err = Cli::try_parse_from([
            "llmgw",
            "provider",
            "add",
            "p",
            "--protocol",
            "openai",
            "--base-url",
            "http://x",
            "--header",
            "broken",
        ])
        .err()
        .unwrap();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn update_needs_a_change() {
        let err = Cli::try_parse_from(["llmgw", "provider", "update", "p"])
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["llmgw", "model", "update", "m"])
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(Cli::try_parse_from(["llmgw", "model", "update", "m", "--disable"]).is_ok());
        assert!(Cli::try_parse_from([
            "llmgw",
            "provider",
            "update",
            "p",
            "--stream-usage",
            "false"
        ])
        .is_ok());
    }

    #[test]
    fn global_options_and_lists() {
        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--target",
            "b:x",
            "--weights",
            "3,1",
            "-o",
            "json",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.server, "http://h:1");
        let Command::Model(ModelCmd::Add(a)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.targets, ["a", "b:x"]);
        assert_eq!(a.common.weights, Some(vec![3, 1]));
        // Price flags go together.
        assert!(Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--price-input",
            "1"
        ])
        .is_err());
        // Weights must be at least 1.
        assert!(Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--weights",
            "0"
        ])
        .is_err());
    }
}
