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
        providers, models, client API keys, their limits, data planes and the \
        configuration as a whole (export / apply).",
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
    /// Make the gateway's configuration what a file says. Providers, models
    /// and keys absent from the file are kept (and listed) unless --prune
    /// is given.
    Apply(ApplyArgs),
    /// Show request logs (newest first), follow new ones as they are stored
    /// (--follow), or show one request in full (`logs get ID`).
    #[command(visible_alias = "log")]
    Logs(LogsArgs),
    /// Request statistics: counts, error rate, latency and time-to-first-byte
    /// percentiles, tokens and cost; by default over the last 24 hours.
    Stats(StatsArgs),
    /// Routing tools: `route explain MODEL` shows which targets a request
    /// would be sent to, in which order, and why the others are left out.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Current use against every limit (rate, concurrency, budget) of keys,
    /// models and providers; `limits default` sets the limits of every key
    /// that sets none.
    #[command(visible_alias = "limit")]
    Limits(LimitsArgs),
    /// Requests in flight on every data plane (`--follow` to watch them),
    /// and `requests cancel ID` to stop one.
    #[command(visible_alias = "request", long_about = REQUESTS_ABOUT)]
    Requests(RequestsArgs),
}

// ---------- requests in flight ----------

const REQUESTS_ABOUT: &str = "\
Requests in flight on every data plane, oldest first: id, data plane, key,
model, target (provider:upstream model of the current attempt), protocols
(client→upstream), stream, age, attempt and tokens so far.

Each data plane reports its requests to the control plane it is connected
to, at most every 250 ms (a request shorter than that may never show), and
every control plane on the same database lists them all. TOKENS are output
tokens so far: the usage the upstream reported in the stream when it
reports one as it goes (Anthropic), else the text so far at 4 bytes a token;
refreshed at most once a second; a non-streaming answer counts only at its
end. A data plane that stops is dropped from the list when its stream ends,
or within 10 s when it goes silent.

`llmgw requests cancel ID` stops a request: its data plane aborts the
upstream, ends the client's response with an error in the client's protocol
(a terminal error event in a stream, 499 before the answer started), and
logs it with status 499 and outcome cancelled_by_admin, charged for the
tokens produced so far.";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestsArgs {
    #[command(subcommand)]
    pub command: Option<RequestsCmd>,
    /// Only the requests of this data plane (its node id).
    #[arg(long, value_name = "NODE_ID")]
    pub node: Option<String>,
    /// Print the list, then each change as it comes (a request started,
    /// moved on, or ended), until interrupted (JSON lines of events with
    /// -o json).
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Subcommand)]
pub enum RequestsCmd {
    /// Cancel a request in flight (the id from `llmgw requests`, or a
    /// response's x-llmgw-request-id). A request that has ended, or an
    /// unknown id, is an error that says so.
    Cancel(RequestIdArg),
}

#[derive(Args)]
pub struct RequestIdArg {
    /// The request id.
    pub id: String,
}

// ---------- limits ----------

/// A spend budget's UTC calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BudgetPeriod {
    Day,
    /// From Monday 00:00 UTC.
    Week,
    Month,
    /// Until the spend is reset.
    Total,
}

/// What data planes do with a limit while no control plane answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOutage {
    /// Admit up to the limit divided by the data planes last known.
    Open,
    /// Refuse.
    Closed,
}

/// The limit flags of keys, models and providers. On an update a flag
/// given replaces that limit, 0 removes it, and what is not given stays.
#[derive(Args, Default)]
#[group(id = "limits", multiple = true)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Requests per minute (per --window-ms); 0 removes the limit.
    #[arg(long, value_name = "N")]
    pub rpm: Option<u64>,
    /// Input plus output tokens per minute (per --window-ms); 0 removes it.
    #[arg(long, value_name = "N")]
    pub tpm: Option<u64>,
    /// Requests in flight at once; 0 removes the limit.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Spend budget in US dollars per --budget-period, e.g. 25 or 0.05
    /// (to the micro-dollar); 0 removes it.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub budget: Option<u64>,
    /// The budget's period, in UTC [default: month].
    #[arg(long, value_enum, value_name = "PERIOD")]
    pub budget_period: Option<BudgetPeriod>,
    /// Length of the rpm/tpm window in milliseconds, 100 to 86400000
    /// [default: 60000].
    #[arg(long, value_name = "N")]
    pub window_ms: Option<u32>,
    /// What data planes do while no control plane answers: admit a local
    /// share of the limit (open) or refuse (closed) [default: open].
    #[arg(long, value_enum, value_name = "MODE")]
    pub on_outage: Option<OnOutage>,
}

impl LimitArgs {
    /// Whether any limit flag is given.
    pub fn any(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.max_concurrency.is_some()
            || self.budget.is_some()
            || self.budget_period.is_some()
            || self.window_ms.is_some()
            || self.on_outage.is_some()
    }
}

/// The name a value of an enum flag has on the command line (and on the
/// wire: "day", "closed", "key").
pub fn value_name<E: ValueEnum>(e: &E) -> String {
    e.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// An update's options: at least one of `C`'s or of the limit flags. (A
/// group of the change struct cannot hold the flattened limit flags.)
fn change_group<C: Args>() -> clap::ArgGroup {
    let ids = |cmd: clap::Command| -> Vec<clap::Id> {
        cmd.get_arguments().map(|a| a.get_id().clone()).collect()
    };
    let mut args = ids(C::augment_args(clap::Command::new("changes")));
    args.extend(ids(LimitArgs::augment_args(clap::Command::new("limits"))));
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(args)
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LimitsArgs {
    #[command(subcommand)]
    pub command: Option<LimitsCmd>,
    /// Only this scope.
    #[arg(long, value_enum)]
    pub scope: Option<LimitScope>,
    /// Only this name (of a key, model or provider).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LimitScope {
    Key,
    Model,
    Provider,
}

#[derive(Subcommand)]
pub enum LimitsCmd {
    /// Change the limits of every key that sets none (each key gets its
    /// own buckets); flags not given stay as they are (give at least one).
    Default(LimitArgs),
}

// ---------- providers ----------

/// A provider's wire protocol; the names are those of `llmgw_core::Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The whole OpenAI API (Chat Completions, Responses, embeddings).
    Openai,
    /// OpenAI-compatible servers with Chat Completions only (vLLM, Ollama,
    /// DeepSeek, Groq); Responses clients are translated to Chat.
    OpenaiChat,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini (generateContent).
    Gemini,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Openai => "openai",
            Protocol::OpenaiChat => "openai-chat",
            Protocol::Anthropic => "anthropic",
            Protocol::Gemini => "gemini",
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
    #[command(visible_alias = "create")]
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
    /// Forget the provider's spend in its budget's current period.
    ResetSpend(NameArg),
    /// List what the provider's upstream serves, from its own models
    /// endpoint (the control plane calls it with the provider's key).
    Models(NameArg),
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
    /// Wire protocol the upstream speaks; requests in another client
    /// protocol are translated to it.
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Base URL of the upstream API, e.g. https://api.openai.com/v1,
    /// https://api.anthropic.com/v1 or
    /// https://generativelanguage.googleapis.com/v1beta.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// API key for the upstream; stored encrypted and shown masked. On the
    /// command line it is visible to other local users (`ps`) and kept in
    /// shell history: prefer --api-key-file or --api-key-env.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Read the API key from the first line of FILE; `-` reads it from
    /// standard input (e.g. `printf %s "$KEY" | llmgw provider add ...
    /// --api-key-file -`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["api_key", "api_key_env"])]
    pub api_key_file: Option<PathBuf>,
    /// Read the API key from the environment variable VAR.
    #[arg(long, value_name = "VAR", conflicts_with = "api_key")]
    pub api_key_env: Option<String>,
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
    /// Outbound proxy for this provider's upstream traffic:
    /// http://[USER:PASS@]HOST:PORT, https://... or socks5://...; the
    /// credentials are stored encrypted and shown masked. A URL with
    /// credentials is better given by --proxy-file or --proxy-env.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Read the proxy URL from the first line of FILE; `-` reads it from
    /// standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["proxy", "proxy_env"])]
    pub proxy_file: Option<PathBuf>,
    /// Read the proxy URL from the environment variable VAR.
    #[arg(long, value_name = "VAR", conflicts_with = "proxy")]
    pub proxy_env: Option<String>,
    /// A default request parameter as NAME=VALUE (VALUE is JSON, else a
    /// string), filled into the upstream body only when the request lacks
    /// that top-level field. Repeat for more.
    #[arg(long = "default-param", value_name = "NAME=VALUE")]
    pub default_params: Vec<String>,
    /// Limits that protect the upstream's own quota.
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args)]
#[command(group = change_group::<ProviderChanges>())]
pub struct ProviderUpdateArgs {
    /// Name of the provider to change.
    pub name: String,
    #[command(flatten)]
    pub changes: ProviderChanges,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args)]
pub struct ProviderChanges {
    /// New wire protocol.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// New base URL.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// New upstream API key; an empty string removes the key. On the
    /// command line it is visible to other local users (`ps`) and kept in
    /// shell history: prefer --api-key-file or --api-key-env.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Read the new API key from the first line of FILE; `-` reads it from
    /// standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["api_key", "api_key_env"])]
    pub api_key_file: Option<PathBuf>,
    /// Read the new API key from the environment variable VAR.
    #[arg(long, value_name = "VAR", conflicts_with = "api_key")]
    pub api_key_env: Option<String>,
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
    /// New outbound proxy (http://, https:// or socks5://, with optional
    /// USER:PASS@). A URL with credentials is better given by --proxy-file
    /// or --proxy-env.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Read the new proxy URL from the first line of FILE; `-` reads it
    /// from standard input.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["proxy", "proxy_env", "no_proxy"]
    )]
    pub proxy_file: Option<PathBuf>,
    /// Read the new proxy URL from the environment variable VAR.
    #[arg(long, value_name = "VAR", conflicts_with_all = ["proxy", "no_proxy"])]
    pub proxy_env: Option<String>,
    /// Remove the outbound proxy: connect to the upstream directly.
    #[arg(long)]
    pub no_proxy: bool,
    /// A default request parameter as NAME=VALUE (VALUE is JSON, else a
    /// string), filled into the upstream body only when the request lacks
    /// that top-level field. Repeat for more;
    /// when given, these replace all of the provider's defaults.
    #[arg(
        long = "default-param",
        value_name = "NAME=VALUE",
        conflicts_with = "clear_default_params"
    )]
    pub default_params: Vec<String>,
    /// Remove every default parameter of the provider.
    #[arg(long)]
    pub clear_default_params: bool,
}

// ---------- models ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    Priority,
    RoundRobin,
    Weighted,
    LeastLatency,
    /// The cheapest target first, by its prices for the request's estimated
    /// input and max_tokens (`route explain` shows each target's estimate).
    CostFirst,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
            Strategy::CostFirst => "cost-first",
        }
    }
}

/// What translation does with a request feature the target's protocol
/// cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Translation {
    /// Refuse the request, naming the feature.
    Strict,
    /// Drop the feature (the request log lists it) and go on.
    Lenient,
}

impl Translation {
    pub fn as_str(self) -> &'static str {
        match self {
            Translation::Strict => "strict",
            Translation::Lenient => "lenient",
        }
    }
}

/// Which endpoints a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelType {
    /// Chat completions, Responses, Messages, Gemini generateContent,
    /// legacy completions and token counts.
    Chat,
    /// /v1/embeddings.
    Embedding,
    /// Text to speech: /v1/audio/speech.
    Speech,
    /// Speech to text: /v1/audio/transcriptions and /v1/audio/translations.
    Transcription,
    /// Images: /v1/images/generations, /v1/images/edits and
    /// /v1/images/variations.
    Image,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Chat => "chat",
            ModelType::Embedding => "embedding",
            ModelType::Speech => "speech",
            ModelType::Transcription => "transcription",
            ModelType::Image => "image",
        }
    }
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Create a model.
    #[command(visible_alias = "create")]
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
    /// Forget the model's spend in its budget's current period.
    ResetSpend(NameArg),
    /// Send a tiny request to each target of the model, one after another,
    /// from the control plane; exits non-zero if any target fails.
    Test(ModelTestArgs),
    /// Create one model per upstream model of a provider (see `provider
    /// models`), each with that provider and upstream model as its target;
    /// existing models are skipped.
    Import(ModelImportArgs),
    /// Rename a target (provider and upstream model) in every model that
    /// uses it, in one change.
    Retarget(ModelRetargetArgs),
    /// Show the model's prices in effect, per target; with --history,
    /// every change of them with its time (scheduled ones included).
    Prices(crate::commands::ModelPricesArgs),
}

// ---------- model tools (#17): test, import, retarget ----------

#[derive(Args)]
pub struct ModelTestArgs {
    /// The model whose targets to test.
    pub name: String,
    /// Per target, the whole request (e.g. 30s, 500ms; at most 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_test_timeout)]
    pub timeout: u32,
}

#[derive(Args)]
pub struct ModelImportArgs {
    /// The provider whose upstream models to import.
    pub provider: String,
    /// Only upstream ids matching this glob ('*' any run, '?' one character).
    #[arg(long = "match", value_name = "GLOB")]
    pub pattern: Option<String>,
    /// Prefix for each model's name (the name is PREFIX + upstream id).
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// The type of the models created [default: chat].
    #[arg(long = "type", value_enum)]
    pub model_type: Option<ModelType>,
    /// Show what would be created and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct ModelRetargetArgs {
    /// The target to rename.
    #[arg(long, value_name = "PROVIDER:UPSTREAM_MODEL")]
    pub from: String,
    /// What it becomes.
    #[arg(long, value_name = "PROVIDER:UPSTREAM_MODEL")]
    pub to: String,
    /// Show the diff and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A model test's per-target timeout, in milliseconds: 1 ms to 5 minutes.
pub fn parse_test_timeout(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 500ms)"))?;
    let ms = d.as_millis();
    if ms == 0 || ms > 300_000 {
        return Err("give a timeout from 1ms to 5m".to_string());
    }
    u32::try_from(ms).map_err(|e| e.to_string())
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
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Options shared by `model add` and `model update`.
#[derive(Args)]
pub struct ModelOpts {
    /// How to choose among targets of equal priority [default: priority].
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// One weight per target, comma separated, in target order (default 1 each).
    /// 0 drains a target: no traffic while another target of its priority
    /// is healthy.
    #[arg(long, value_name = "W,W,...", value_delimiter = ',')]
    pub weights: Option<Vec<u32>>,
    /// A default request parameter of target N (from 1, in target order)
    /// as N:NAME=VALUE; it wins over the provider's for the same name.
    /// Repeat for more.
    #[arg(long = "target-default-param", value_name = "N:NAME=VALUE")]
    pub target_default_params: Vec<String>,
    /// Targets' own prices (`--target-price*`).
    #[command(flatten)]
    pub target_prices: crate::commands::TargetPriceArgs,
    /// Attempts per target; 0 or absent means the global default.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts on one target, in milliseconds.
    #[arg(long, value_name = "N")]
    pub retry_delay_ms: Option<u32>,
    /// The model's prices (`--price-*`): the flags given make the whole
    /// price sheet, and a price not given is 0.
    #[command(flatten)]
    pub prices: crate::commands::PriceArgs,
    /// max_tokens sent to targets that require it (Anthropic) when the
    /// client gives none; absent means the data plane's default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub default_max_tokens: Option<u32>,
    /// What translation does with a request feature the target's protocol
    /// cannot express [default: strict].
    #[arg(long, value_enum)]
    pub translation: Option<Translation>,
    /// Which endpoints the model serves; a request to an endpoint of
    /// another type is refused with 400 [default: chat].
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub model_type: Option<ModelType>,
}

#[derive(Args)]
#[command(group = change_group::<ModelChanges>())]
pub struct ModelUpdateArgs {
    /// Name of the model to change.
    pub name: String,
    #[command(flatten)]
    pub changes: ModelChanges,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args)]
pub struct ModelChanges {
    /// Target as PROVIDER[:UPSTREAM_MODEL]; when given, the targets given
    /// replace all targets (in priority order, like `model add`).
    #[arg(long = "target", value_name = "PROVIDER[:UPSTREAM_MODEL]")]
    pub targets: Vec<String>,
    /// New strategy.
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// One weight per target, comma separated. Without --target, sets the
    /// weights of the model's current targets. 0 drains a target.
    #[arg(long, value_name = "W,W,...", value_delimiter = ',')]
    pub weights: Option<Vec<u32>>,
    /// A default request parameter of target N (from 1, in target order)
    /// as N:NAME=VALUE, winning over the provider's. The targets named get
    /// exactly the defaults given for them (`N:` alone: none); without
    /// --target, the model's current targets are changed. Repeat for more.
    #[arg(long = "target-default-param", value_name = "N:NAME=VALUE")]
    pub target_default_params: Vec<String>,
    /// Targets' own prices (`--target-price*`).
    #[command(flatten)]
    pub target_prices: crate::commands::TargetPriceArgs,
    /// Attempts per target; 0 means the global default.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts on one target, in milliseconds.
    #[arg(long, value_name = "N", conflicts_with = "clear_retry_delay")]
    pub retry_delay_ms: Option<u32>,
    /// Remove the retry delay override, so the global default applies.
    #[arg(long)]
    pub clear_retry_delay: bool,
    /// The model's prices (`--price-*`): when any is given, the flags
    /// given replace all the model's prices, and a price not given is 0.
    #[command(flatten)]
    pub prices: crate::commands::PriceArgs,
    /// When the prices given (the model's, and targets' own from
    /// --target-price) apply: an RFC 3339 time in the future (e.g.
    /// 2026-01-01T00:00:00Z); the prices in effect stay until then. The
    /// other changes apply now. Absent: now.
    #[arg(long = "prices-from", value_name = "TIME")]
    pub prices_from: Option<String>,
    /// Remove the model's price changes scheduled for later (see
    /// `model prices NAME --history`); with --prices-from, before the new
    /// one is scheduled.
    #[arg(long)]
    pub cancel_scheduled_prices: bool,
    /// max_tokens sent to targets that require it (Anthropic) when the
    /// client gives none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with = "clear_default_max_tokens")]
    pub default_max_tokens: Option<u32>,
    /// Remove the default max_tokens, so the data plane's default applies.
    #[arg(long)]
    pub clear_default_max_tokens: bool,
    /// What translation does with a request feature the target's protocol
    /// cannot express.
    #[arg(long, value_enum)]
    pub translation: Option<Translation>,
    /// Which endpoints the model serves.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub model_type: Option<ModelType>,
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
    /// Change a key's models, body logging or limits; its secret stays.
    /// Options not given stay as they are (give at least one).
    #[command(override_usage = "llmgw key update [OPTIONS] <NAME>")]
    Update(KeyUpdateArgs),
    /// Revoke a key: it stays listed but stops working.
    Revoke(NameArg),
    /// Delete a key.
    #[command(visible_alias = "rm")]
    Delete(NameArg),
    /// Forget the key's spend in its budget's current period.
    ResetSpend(NameArg),
}

#[derive(Args)]
#[command(group = change_group::<KeyChanges>())]
pub struct KeyUpdateArgs {
    /// Name of the key to change.
    pub name: String,
    #[command(flatten)]
    pub changes: KeyChanges,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args)]
pub struct KeyChanges {
    /// Models the key may use, comma separated; replaces the list.
    #[arg(
        long,
        value_name = "M,M,...",
        value_delimiter = ',',
        conflicts_with = "all_models"
    )]
    pub models: Option<Vec<String>>,
    /// Let the key use every model.
    #[arg(long)]
    pub all_models: bool,
    /// Whether to record request and response bodies for the key's requests.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub log_bodies: Option<bool>,
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
    /// The key's own limits; without any, the default key limits (`llmgw
    /// limits default`) apply to it.
    #[command(flatten)]
    pub limits: LimitArgs,
}

// ---------- apply ----------

#[derive(Args)]
pub struct ApplyArgs {
    /// Configuration file in YAML or JSON, as `llmgw export` writes it;
    /// `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
    /// Report the changes (deletions included) without making them.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete providers, models and keys the file does not mention.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: allow deleting every provider, model and key (for an
    /// empty file such as `{}`).
    #[arg(long, requires = "prune")]
    pub allow_empty: bool,
}

// ---------- request logs and stats ----------

/// Filters shared by `logs` and `stats`.
#[derive(Args, Clone, Default)]
pub struct LogFilterArgs {
    /// Only requests at or after this time: a duration back from now (24h,
    /// 30m, 7d) or an RFC 3339 time (2024-05-01T12:00:00Z).
    #[arg(long, value_name = "AGO|TIME", value_parser = parse_time_bound)]
    pub since: Option<i64>,
    /// Only requests before this time: a duration back from now or an
    /// RFC 3339 time.
    #[arg(long, value_name = "AGO|TIME", value_parser = parse_time_bound)]
    pub until: Option<i64>,
    /// Only requests for this model (the name clients asked for).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only requests answered by this provider.
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Only requests made in this client protocol (openai-chat,
    /// openai-responses, anthropic, gemini, openai).
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// Only requests answered by an upstream of this protocol (openai,
    /// openai-chat, anthropic, gemini).
    #[arg(long, value_name = "PROTOCOL")]
    pub upstream_protocol: Option<String>,
    /// Only requests whose upstream stopped for this reason, as it said it
    /// (end_turn, pause_turn, MAX_TOKENS, tool_calls, ...).
    #[arg(long, value_name = "REASON")]
    pub stop_reason: Option<String>,
    /// Only requests made for this end user (the X-User-ID header, OpenAI's
    /// `user`, Anthropic's `metadata.user_id`).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only the requests of this W3C trace: its 32 hex digits (the trace id
    /// `logs get` shows, or the middle of a `traceparent` header).
    #[arg(long, value_name = "TRACE_ID")]
    pub trace_id: Option<String>,
    /// Only the replays of this request (`llmgw logs replay`).
    #[arg(long, value_name = "ID")]
    pub replay_of: Option<String>,
    /// Only requests made with this client key (its name).
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// Only these statuses: 200, 4xx, 5xx or a range such as 400-499.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<StatusRange>,
    /// Only requests that took at least this long.
    #[arg(long, value_name = "N")]
    pub min_latency_ms: Option<u64>,
    /// Only requests that took at most this long.
    #[arg(long, value_name = "N")]
    pub max_latency_ms: Option<u64>,
    /// Only requests with at least this many input plus output tokens.
    #[arg(long, value_name = "N")]
    pub min_tokens: Option<u64>,
    /// Only requests with at most this many input plus output tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Only streamed (true) or only non-streamed (false) requests.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub stream: Option<bool>,
    /// Only failed requests: status 400 or above, cancelled, or with an error.
    #[arg(long)]
    pub errors: bool,
    /// Only requests that ended so: ok, upstream_error, interrupted,
    /// timeout, cancelled_by_client, cancelled_by_admin or refused.
    #[arg(long, value_name = "OUTCOME", value_parser = parse_outcome)]
    pub outcome: Option<llmgw_proto::v1::Outcome>,
}

/// An outcome by its name (`llmgw_proto::v1::Outcome::name`).
pub fn parse_outcome(s: &str) -> Result<llmgw_proto::v1::Outcome, String> {
    let t = s.trim().to_ascii_lowercase().replace('-', "_");
    llmgw_proto::v1::Outcome::from_name(&t)
        .filter(|o| *o != llmgw_proto::v1::Outcome::Unspecified)
        .ok_or_else(|| {
            let names: Vec<&str> = llmgw_proto::v1::Outcome::ALL
                .iter()
                .map(|o| o.name())
                .collect();
            format!("`{s}` is not an outcome: give one of {}", names.join(", "))
        })
}

/// An inclusive status range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogOrder {
    Time,
    Latency,
    Ttfb,
    Tokens,
    Cost,
    Status,
}

impl LogOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            LogOrder::Time => "time",
            LogOrder::Latency => "latency",
            LogOrder::Ttfb => "ttfb",
            LogOrder::Tokens => "tokens",
            LogOrder::Cost => "cost",
            LogOrder::Status => "status",
        }
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: Option<LogsCmd>,
    #[command(flatten)]
    pub filter: LogFilterArgs,
    /// How many records to show; more than 1000 are fetched page by page.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub limit: u32,
    /// What to sort by (largest or newest first).
    #[arg(long, value_enum, default_value_t = LogOrder::Time)]
    pub order_by: LogOrder,
    /// Smallest or oldest first.
    #[arg(long)]
    pub asc: bool,
    /// Print new records as they are stored, until interrupted (JSON lines
    /// with -o json).
    #[arg(short, long, conflicts_with_all = ["limit", "order_by", "asc"])]
    pub follow: bool,
}

#[derive(Subcommand)]
pub enum LogsCmd {
    /// Show one request in full: headers, bodies and every attempt.
    #[command(alias = "show")]
    Get(LogIdArg),
    /// Send a logged request's body again through a data plane, as its key
    /// or another, optionally to another model; the answer streams to
    /// stdout. Works only when the request's body was logged whole. The
    /// new request is logged with origin "replay", linked to this one.
    Replay(ReplayArgs),
    /// Write every record the filters match (summaries with their
    /// attempts, no headers or bodies), oldest first, to a file as JSON
    /// lines, CSV or Parquet. Records stream from the control plane page
    /// by page, so an export of any size runs in bounded memory. Without
    /// --since, every stored record.
    Export(Box<ExportArgs>),
}

/// File formats of `llmgw logs export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line, the shape of `llmgw logs -o json`.
    Ndjson,
    /// One row per record, a header row first.
    Csv,
    /// Apache Parquet, one row per record (for DuckDB, pandas, Spark).
    Parquet,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: LogFilterArgs,
    /// The format; without it, the file's extension says (.ndjson, .jsonl,
    /// .csv, .parquet), else JSON lines.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Write here; without it (or with -), to stdout.
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The request id (the x-llmgw-request-id response header).
    pub id: String,
    /// Send it to this model instead (the body's `model`, or the path's
    /// for Gemini).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Send it as this client key (by name) instead of the original's.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
}

#[derive(Args)]
pub struct LogIdArg {
    /// The request id (the x-llmgw-request-id response header).
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsGroup {
    Model,
    Provider,
    Key,
    /// The end user (X-User-ID, OpenAI's `user`, Anthropic's
    /// `metadata.user_id`).
    User,
    Outcome,
}

impl StatsGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            StatsGroup::Model => "model",
            StatsGroup::Provider => "provider",
            StatsGroup::Key => "key",
            StatsGroup::User => "user",
            StatsGroup::Outcome => "outcome",
        }
    }
}

#[derive(Args)]
pub struct StatsArgs {
    /// Filters; without --since, the last 24 hours.
    #[command(flatten)]
    pub filter: LogFilterArgs,
    /// One row per model, provider, client key, end user or outcome,
    /// besides the total.
    #[arg(long, value_enum)]
    pub by: Option<StatsGroup>,
    /// Add a time series with buckets this wide, e.g. 1h or 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_bucket)]
    pub bucket: Option<u32>,
}

// ---------- routing ----------

#[derive(Subcommand)]
pub enum RouteCmd {
    /// A dry run of routing against the live configuration: every target of
    /// MODEL, whether it would be tried and in which order, and why.
    Explain(RouteExplainArgs),
}

#[derive(Args)]
pub struct RouteExplainArgs {
    /// The model name a client would ask for.
    pub model: String,
    /// A request header as NAME:VALUE, for rules that test headers. Repeat
    /// for more headers.
    #[arg(long = "header", value_name = "K:V", value_parser = parse_header)]
    pub headers: Vec<Header>,
    /// Name of the client key making the request.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// File with the JSON request body (`-` reads standard input); default
    /// {"model": MODEL}.
    #[arg(long, value_name = "FILE")]
    pub body: Option<String>,
    /// The API the client calls; the SERVING column then says, per target,
    /// whether the request passes through or is translated, and to what.
    #[arg(long, value_enum, alias = "protocol", default_value_t = ClientApi::Chat)]
    pub api: ClientApi,
}

/// A client API on the data plane, as `llmgw_core::serving::ClientApi`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientApi {
    /// POST /v1/chat/completions
    #[value(alias = "openai")]
    Chat,
    /// POST /v1/responses
    Responses,
    /// POST /v1/messages (Anthropic)
    #[value(alias = "anthropic")]
    Messages,
    /// POST /v1beta/models/{model}:generateContent
    Gemini,
    /// POST /v1/embeddings
    Embeddings,
    /// POST /v1/completions
    Completions,
    /// POST /v1/messages/count_tokens
    CountTokens,
    /// POST /v1beta/models/{model}:countTokens
    GeminiCountTokens,
    /// POST /v1/audio/speech
    Speech,
    /// POST /v1/audio/transcriptions and /v1/audio/translations
    Transcription,
    /// POST /v1/images/generations, /v1/images/edits and /v1/images/variations
    Image,
}

impl ClientApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApi::Chat => "chat",
            ClientApi::Responses => "responses",
            ClientApi::Messages => "messages",
            ClientApi::Gemini => "gemini",
            ClientApi::Embeddings => "embeddings",
            ClientApi::Completions => "completions",
            ClientApi::CountTokens => "count-tokens",
            ClientApi::GeminiCountTokens => "gemini-count-tokens",
            ClientApi::Speech => "speech",
            ClientApi::Transcription => "transcription",
            ClientApi::Image => "image",
        }
    }
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

/// A humantime duration (`30d`, `12h`, `1y 2months`) in whole seconds, at
/// least one.
/// US dollars, to the micro-dollar: "0.05" is 50000. Exact (no floating
/// point); negative numbers, exponents and more than six decimals are
/// refused.
pub fn parse_usd(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    let bad = || format!("`{s}` is not an amount of US dollars (e.g. 25, 0.05 or 1.5)");
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    if frac.len() > 6 {
        return Err(format!(
            "`{s}` has more than six decimals; budgets count micro-dollars"
        ));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .filter(|m| i64::try_from(*m).is_ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn parse_lifetime(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    match d.as_secs() {
        0 => Err(format!("`{s}` is shorter than one second")),
        n => Ok(n),
    }
}

/// A time bound in Unix milliseconds: a duration back from now (`24h`,
/// `7d`, `1h 30m`) or an RFC 3339 time.
pub fn parse_time_bound(s: &str) -> Result<i64, String> {
    time_bound_at(s, std::time::SystemTime::now())
}

fn time_bound_at(s: &str, now: std::time::SystemTime) -> Result<i64, String> {
    let t = s.trim();
    let at = match humantime::parse_duration(t) {
        Ok(ago) => now
            .checked_sub(ago)
            .ok_or_else(|| format!("`{s}` reaches back before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(t).map_err(|_| {
            format!("`{s}` is neither a duration (24h, 30m, 7d) nor an RFC 3339 time")
        })?,
    };
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{s}` is before 1970"))?
        .as_millis();
    match i64::try_from(ms) {
        Ok(0) | Err(_) => Err(format!("`{s}` is out of range")),
        Ok(ms) => Ok(ms),
    }
}

/// `200`, `4xx`, `5xx` or `N-M`.
pub fn parse_status(s: &str) -> Result<StatusRange, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("`{s}` is not a status: give 200, 4xx, 5xx or a range like 400-499");
    let num = |v: &str| -> Result<u32, String> {
        let n: u32 = v.trim().parse().map_err(|_| bad())?;
        if (100..=999).contains(&n) {
            Ok(n)
        } else {
            Err(format!("`{s}`: a status is between 100 and 999"))
        }
    };
    let range = if let Some(d) = t.strip_suffix("xx") {
        let d: u32 = d.parse().map_err(|_| bad())?;
        if !(1..=9).contains(&d) {
            return Err(bad());
        }
        StatusRange {
            min: d * 100,
            max: d * 100 + 99,
        }
    } else if let Some((a, b)) = t.split_once('-') {
        StatusRange {
            min: num(a)?,
            max: num(b)?,
        }
    } else {
        let n = num(&t)?;
        StatusRange { min: n, max: n }
    };
    if range.min > range.max {
        return Err(format!("`{s}`: the range is empty"));
    }
    Ok(range)
}

/// A bucket width in whole seconds, at least one.
pub fn parse_bucket(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    match u32::try_from(d.as_secs()) {
        Ok(0) => Err(format!("`{s}` is shorter than one second")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn time_bounds() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_714_564_800);
        assert_eq!(
            time_bound_at("24h", now).unwrap(),
            (1_714_564_800 - 86_400) * 1000
        );
        assert_eq!(
            time_bound_at("30m", now).unwrap(),
            (1_714_564_800 - 1800) * 1000
        );
        assert_eq!(
            time_bound_at("2024-05-01T12:00:00Z", now).unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            time_bound_at("2024-05-01T12:00:00.250Z", now).unwrap(),
            1_714_564_800_250
        );
        assert!(time_bound_at("yesterday", now).is_err());
        assert!(time_bound_at("100y", now).is_err());
        assert!(parse_time_bound("1h").is_ok());
    }

    #[test]
    fn statuses() {
        let r = |min, max| StatusRange { min, max };
        assert_eq!(parse_status("200").unwrap(), r(200, 200));
        assert_eq!(parse_status("4xx").unwrap(), r(400, 499));
        assert_eq!(parse_status("5XX").unwrap(), r(500, 599));
        assert_eq!(parse_status("500-504").unwrap(), r(500, 504));
        for bad in ["", "abc", "0xx", "20", "1000", "500-400", "4x", "-"] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usd_amounts_are_exact_micro_dollars() {
        for (text, micros) in [
            ("0.05", 50_000),
            ("25", 25_000_000),
            ("$1.5", 1_500_000),
            ("0.000001", 1),
            (".5", 500_000),
            ("3.", 3_000_000),
            ("0", 0),
            (" 12.345678 ", 12_345_678),
        ] {
            assert_eq!(parse_usd(text), Ok(micros), "{text}");
        }
        for bad in [
            "",
            ".",
            "-1",
            "+1",
            "1e3",
            "abc",
            "1.2.3",
            "1,5",
            "0.0000001",
            "99999999999999999",
        ] {
            let e = parse_usd(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn limit_flags_on_keys_models_providers_and_the_default() {
        let cli = Cli::try_parse_from([
            "llmgw",
            "key",
            "create",
            "k",
            "--rpm",
            "7",
            "--budget",
            "2.5",
            "--budget-period",
            "week",
            "--window-ms",
            "500",
            "--on-outage",
            "closed",
        ])
        .unwrap();
        let Command::Key(KeyCmd::Create(a)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!((a.limits.rpm, a.limits.budget), (Some(7), Some(2_500_000)));
        assert_eq!(a.limits.budget_period, Some(BudgetPeriod::Week));
        assert_eq!(a.limits.on_outage, Some(OnOutage::Closed));
        assert_eq!(a.limits.window_ms, Some(500));
        // The names on the command line are those of the wire.
        for (p, name) in [
            (BudgetPeriod::Day, "day"),
            (BudgetPeriod::Week, "week"),
            (BudgetPeriod::Month, "month"),
            (BudgetPeriod::Total, "total"),
        ] {
            assert_eq!(value_name(&p), name);
        }
        assert_eq!(value_name(&OnOutage::Open), "open");
        assert_eq!(value_name(&LimitScope::Provider), "provider");

        // A limit flag alone is a change.
        let cli = Cli::try_parse_from(["llmgw", "key", "update", "k", "--tpm", "0"]).unwrap();
        let Command::Key(KeyCmd::Update(u)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(u.limits.tpm, Some(0));
        assert!(Cli::try_parse_from(["llmgw", "key", "update", "k"]).is_err());
        assert!(Cli::try_parse_from([
            "llmgw",
            "key",
            "update",
            "k",
            "--models",
            "a",
            "--all-models"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["llmgw", "key", "update", "k", "--log-bodies", "false"]).is_ok()
        );
        for args in [
            &["llmgw", "model", "update", "m", "--max-concurrency", "3"][..],
            &["llmgw", "provider", "update", "p", "--rpm", "5"],
            &[
                "llmgw", "model", "create", "m", "--target", "p", "--tpm", "100",
            ],
            &[
                "llmgw",
                "provider",
                "create",
                "p",
                "--protocol",
                "openai",
                "--base-url",
                "http://x",
                "--budget",
                "5",
            ],
            &["llmgw", "limits", "default", "--rpm", "100"],
            &["llmgw", "limits", "--scope", "key", "--name", "k"],
            &["llmgw", "key", "reset-spend", "k"],
            &["llmgw", "model", "reset-spend", "m"],
            &["llmgw", "provider", "reset-spend", "p"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        for bad in [
            &["llmgw", "key", "create", "k", "--budget", "-1"][..],
            &["llmgw", "key", "create", "k", "--budget-period", "year"],
            &["llmgw", "key", "create", "k", "--on-outage", "maybe"],
            &["llmgw", "key", "create", "k", "--rpm", "-5"],
            &["llmgw", "limits", "--scope", "team"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(parse_bucket("1h").unwrap(), 3600);
        assert_eq!(parse_bucket("5m").unwrap(), 300);
        assert!(parse_bucket("0s").is_err());
        assert!(parse_bucket("soon").is_err());
    }

    #[test]
    fn logs_export_takes_the_filters_a_format_and_a_file() {
        let cli = Cli::try_parse_from([
            "llmgw", "logs", "export", "--since", "7d", "--model", "m", "--status", "5xx",
            "--format", "csv", "--file", "out.csv",
        ])
        .unwrap();
        let Command::Logs(LogsArgs {
            command: Some(LogsCmd::Export(e)),
            ..
        }) = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!(e.format, Some(ExportFormat::Csv));
        assert_eq!(e.file.as_deref(), Some(std::path::Path::new("out.csv")));
        assert_eq!(e.filter.model.as_deref(), Some("m"));
        assert!(e.filter.since.is_some());
        assert!(Cli::try_parse_from(["llmgw", "logs", "export", "--format", "xlsx"]).is_err());
    }

    #[test]
    fn logs_stats_and_route_commands() {
        let cli = Cli::try_parse_from([
            "llmgw", "logs", "--since", "24h", "--model", "m", "--status", "5xx", "--stream",
            "false", "--errors", "--limit", "10", "-o", "json",
        ])
        .unwrap();
        let Command::Logs(a) = cli.command else {
            panic!("wrong command");
        };
        assert!(a.command.is_none());
        assert_eq!(a.filter.model.as_deref(), Some("m"));
        assert_eq!(a.filter.status, Some(StatusRange { min: 500, max: 599 }));
        assert_eq!(a.filter.stream, Some(false));
        assert!(a.filter.errors && !a.follow);
        assert_eq!(a.limit, 10);

        let cli = Cli::try_parse_from(["llmgw", "logs", "get", "abc"]).unwrap();
        let Command::Logs(a) = cli.command else {
            panic!("wrong command");
        };
        let Some(LogsCmd::Get(id)) = a.command else {
            panic!("no get");
        };
        assert_eq!(id.id, "abc");
        assert!(Cli::try_parse_from(["llmgw", "logs", "--follow", "--provider", "p"]).is_ok());
        assert!(Cli::try_parse_from(["llmgw", "logs", "--follow", "--limit", "5"]).is_err());
        assert!(Cli::try_parse_from(["llmgw", "logs", "--status", "abc"]).is_err());

        let cli = Cli::try_parse_from([
            "llmgw",
            "logs",
            "--protocol",
            "anthropic",
            "--upstream-protocol",
            "openai-chat",
            "--stop-reason",
            "pause_turn",
            "--user",
            "alice",
            "--trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ])
        .unwrap();
        let Command::Logs(a) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.filter.stop_reason.as_deref(), Some("pause_turn"));
        assert_eq!(a.filter.user.as_deref(), Some("alice"));
        assert_eq!(
            a.filter.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(a.filter.protocol.as_deref(), Some("anthropic"));
        assert_eq!(a.filter.upstream_protocol.as_deref(), Some("openai-chat"));
        let cli = Cli::try_parse_from(["llmgw", "stats", "--protocol", "gemini"]).unwrap();
        let Command::Stats(a) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.filter.protocol.as_deref(), Some("gemini"));
        assert!(a.filter.upstream_protocol.is_none());
        assert!(Cli::try_parse_from(["llmgw", "logs", "--protocol"]).is_err());

        let cli =
            Cli::try_parse_from(["llmgw", "stats", "--by", "provider", "--bucket", "1h"]).unwrap();
        let Command::Stats(s) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(s.by, Some(StatsGroup::Provider));
        assert_eq!(s.bucket, Some(3600));
        assert!(s.filter.since.is_none());
        assert!(Cli::try_parse_from(["llmgw", "stats", "--by", "colour"]).is_err());

        // Outcomes: a filter of logs and stats, a grouping of stats, and
        // `logs show` as another name of `logs get`.
        let cli = Cli::try_parse_from(["llmgw", "logs", "--outcome", "timeout"]).unwrap();
        let Command::Logs(a) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.filter.outcome, Some(llmgw_proto::v1::Outcome::Timeout));
        assert!(Cli::try_parse_from(["llmgw", "logs", "--outcome", "exploded"]).is_err());
        let cli = Cli::try_parse_from(["llmgw", "stats", "--by", "outcome"]).unwrap();
        let Command::Stats(s) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(s.by.map(StatsGroup::as_str), Some("outcome"));
        let cli = Cli::try_parse_from(["llmgw", "logs", "show", "0190"]).unwrap();
        let Command::Logs(a) = cli.command else {
            panic!("wrong command");
        };
        assert!(matches!(a.command, Some(LogsCmd::Get(ref id)) if id.id == "0190"));

        let cli = Cli::try_parse_from([
            "llmgw",
            "route",
            "explain",
            "gpt",
            "--header",
            "x-tier: gold",
            "--header",
            "a:b",
            "--key",
            "team",
            "--api",
            "count-tokens",
        ])
        .unwrap();
        let Command::Route(RouteCmd::Explain(e)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(e.model, "gpt");
        assert_eq!(e.headers.len(), 2);
        assert_eq!(e.headers[0].value, "gold");
        assert_eq!(e.key.as_deref(), Some("team"));
        assert_eq!(e.api, ClientApi::CountTokens);
        assert!(Cli::try_parse_from(["llmgw", "route", "explain"]).is_err());
        let api = |args: &[&str]| {
            let mut all = vec!["llmgw", "route", "explain", "m"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Route(RouteCmd::Explain(e))) => Ok(e.api),
                Ok(_) => panic!("wrong command"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(api(&[]).unwrap(), ClientApi::Chat);
        // The names of before --api: --protocol openai|anthropic.
        assert_eq!(
            api(&["--protocol", "anthropic"]).unwrap(),
            ClientApi::Messages
        );
        assert_eq!(api(&["--api", "openai"]).unwrap(), ClientApi::Chat);
        assert!(api(&["--api", "vertex"]).is_err());
        // Every name is one the control plane's ClientApi::parse knows.
        for v in ClientApi::value_variants() {
            let name = v.to_possible_value().unwrap();
            assert_eq!(name.get_name(), v.as_str());
            assert_eq!(api(&["--api", v.as_str()]).unwrap(), *v);
        }
    }

    #[test]
    fn provider_protocols() {
        let protocol = |p: &str| match Cli::try_parse_from([
            "llmgw",
            "provider",
            "add",
            "p",
            "--protocol",
            p,
            "--base-url",
            "http://x",
        ])
        .map(|c| c.command)
        {
            Ok(Command::Provider(ProviderCmd::Add(a))) => Ok(a.protocol),
            Ok(_) => panic!("wrong command"),
            Err(e) => Err(e),
        };
        for (name, want) in [
            ("openai", Protocol::Openai),
            ("openai-chat", Protocol::OpenaiChat),
            ("anthropic", Protocol::Anthropic),
            ("gemini", Protocol::Gemini),
        ] {
            let got = protocol(name).unwrap();
            assert_eq!(got, want);
            assert_eq!(got.as_str(), name);
        }
        let err = protocol("vertex").err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("openai-chat"), "{err}");
        let cli = Cli::try_parse_from([
            "llmgw",
            "provider",
            "update",
            "p",
            "--protocol",
            "openai-chat",
        ])
        .unwrap();
        let Command::Provider(ProviderCmd::Update(u)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(u.changes.protocol, Some(Protocol::OpenaiChat));
    }

    #[test]
    fn model_translation_options() {
        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--default-max-tokens",
            "8192",
            "--translation",
            "lenient",
            "--price-input",
            "3",
            "--price-output",
            "15",
            "--price-cached-input",
            "0.3",
            "--price-cache-write",
            "3.75",
        ])
        .unwrap();
        let Command::Model(ModelCmd::Add(a)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.common.default_max_tokens, Some(8192));
        assert_eq!(a.common.translation, Some(Translation::Lenient));
        assert_eq!(a.common.prices.price_cache_write.as_deref(), Some("3.75"));
        assert_eq!(a.common.prices.price_cached_input.as_deref(), Some("0.3"));
        let add = |extra: &[&str]| {
            let mut all = vec!["llmgw", "model", "add", "m", "--target", "a"];
            all.extend_from_slice(extra);
            Cli::try_parse_from(all)
        };
        assert!(add(&["--default-max-tokens", "0"]).is_err());
        assert!(add(&["--translation", "loose"]).is_err());
        // Prices are exact decimals.
        assert!(add(&["--price-cache-write", "1e3"]).is_err());
        assert!(add(&["--price-input", "0.0000000001"]).is_err());
        assert!(add(&["--price-per-request", "0.001"]).is_ok());

        let update = |extra: &[&str]| {
            let mut all = vec!["llmgw", "model", "update", "m"];
            all.extend_from_slice(extra);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Model(ModelCmd::Update(u))) => Ok(u.changes),
                Ok(_) => panic!("wrong command"),
                Err(e) => Err(e),
            }
        };
        // Each is a change on its own.
        assert_eq!(
            update(&["--translation", "strict"]).unwrap().translation,
            Some(Translation::Strict)
        );
        assert_eq!(
            update(&["--default-max-tokens", "1024"])
                .unwrap()
                .default_max_tokens,
            Some(1024)
        );
        assert!(
            update(&["--clear-default-max-tokens"])
                .unwrap()
                .clear_default_max_tokens
        );
        assert!(update(&["--default-max-tokens", "1", "--clear-default-max-tokens"]).is_err());
    }

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
        // A price flag alone is a whole price sheet (an embedding model
        // has only an input price), but a price is a decimal number.
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
        .is_ok());
        assert!(Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--price-input",
            "-1"
        ])
        .is_err());
        // A weight of 0 drains a target; a negative one is refused.
        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--target",
            "b",
            "--weights",
            "0,1",
        ])
        .unwrap();
        let Command::Model(ModelCmd::Add(a)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.common.weights, Some(vec![0, 1]));
        assert!(Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--weights",
            "-1"
        ])
        .is_err());
        // --allow-empty only with --prune.
        assert!(Cli::try_parse_from(["llmgw", "apply", "-f", "x", "--allow-empty"]).is_err());
        assert!(
            Cli::try_parse_from(["llmgw", "apply", "-f", "x", "--prune", "--allow-empty"]).is_ok()
        );
    }
}
