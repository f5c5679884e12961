//! `engage`: bulk import of Mixpanel profile updates, and the local emulator.

mod failures;
mod guard;
mod input;
mod journal;
mod ledger;
mod progress;
mod reasons;
mod run;
mod term;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use engage_core::model::OpKind;
use input::Format;

/// Send profile updates to Mixpanel's /engage and /groups endpoints, correctly and fast.
#[derive(Debug, Parser)]
#[command(name = "engage", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import profile updates from NDJSON, JSON array or CSV files (optionally .gz).
    #[command(long_about = IMPORT_ABOUT, after_long_help = IMPORT_EXAMPLES)]
    Import(Box<ImportArgs>),
    /// Delete the profiles listed in files: one id per line, or any input format with
    /// --id-field (users, or --groups).
    #[command(
        long_about = DELETE_ABOUT,
        after_long_help = DELETE_EXAMPLES,
        mut_arg("op", |a| a.hide(true)),
        mut_arg("drop", |a| a.hide(true)),
        mut_arg("rename", |a| a.hide(true)),
        mut_arg("reserved_names", |a| a.hide(true)),
        mut_arg("remove_nulls", |a| a.hide(true)),
        mut_arg("tag", |a| a.hide(true))
    )]
    Delete(Box<DeleteArgs>),
    /// Run the local Mixpanel emulator in the foreground (same options as engage-emulator).
    #[command(
        long_about = "Runs the emulator in the foreground. The first line on stdout is exactly \
        `listening on http://HOST:PORT` (the real port when 0 was asked); it serves until SIGINT \
        or SIGTERM and exits 0.",
        after_long_help = "EXAMPLES:\n  engage serve --addr 127.0.0.1:8480\n  engage serve --token my-token --fail-rate 0.2 --seed 7"
    )]
    Serve(engage_emulator::EmulatorArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(
        after_long_help = "EXAMPLES:\n  engage completions bash > ~/.local/share/bash-completion/completions/engage\n  engage completions zsh > \"${fpath[1]}/_engage\"\n  engage completions fish > ~/.config/fish/completions/engage.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    #[command(
        after_long_help = "EXAMPLES:\n  engage man | man -l -\n  engage man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write engage.1, engage-import.1, … into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

const IMPORT_ABOUT: &str = "\
Reads update objects in Mixpanel's own shape ($distinct_id, or $group_key + $group_id, one \
operation, modifiers) or flat records (an export's rows: {\"user_id\": 42, \"email\": …}), \
validates them, batches them (at most 2000 updates and a byte cap per request) and sends them \
with retries, keeping each profile's updates in input order.

Input formats are detected by extension (.ndjson/.jsonl, .json, .csv, .tsv, each optionally \
.gz, and .parquet) or set with --format; `-` reads standard input (NDJSON unless --format \
says otherwise).

A flat record (one without an operation, and every CSV, TSV or Parquet row) becomes one \
update: its id comes from --id-field (default $distinct_id, then distinct_id; for groups \
--group-key with --group-id-field), then --drop, --rename, --reserved-names, --remove-nulls \
and --tag apply in that order, and the properties go under --op (default set). Modifiers \
($ip, $time, $ignore_time, …) stay at the top. Records that already carry an operation are \
sent as they are; both kinds may share a file.

Bad input never stops the import: a malformed line, a wrong type, 1e999, invalid UTF-8 or a \
missing id becomes an entry in the summary and in the --failed file, and every good line is \
still imported. A UTF-8 BOM, CRLF line ends and blank lines are accepted.

Interrupting (Ctrl-C, SIGTERM) stops reading and sending, lets requests in flight finish for up \
to 5 s, and writes the summary (and the journal); a second Ctrl-C exits at once.

Exit status: 0 when every record was accepted, once; 2 when some were rejected, invalid, not \
delivered, or accepted only after an uncertain resend of $add/$append (listed in --failed as \
uncertain_resend); 1 on a fatal error (bad flags, unreadable input, an output that is an \
input, a 401/403 from the server, a failure file or journal that could not be written); 130 \
(SIGINT) or 143 (SIGTERM) when interrupted.";

const IMPORT_EXAMPLES: &str = "\
EXAMPLES:
  Try it locally, against the embedded emulator:
    engage import examples/profiles.ndjson --emulator

  Import into the EU data centre, keep the failures:
    MIXPANEL_TOKEN=... engage import users.ndjson.gz --region eu --failed failed.ndjson

  A CRM export (flat records): id column, reserved names, no nulls, a tag:
    engage import crm-export.ndjson --id-field user_id --reserved-names --remove-nulls --tag source=crm --token ...

  A Parquet file from the warehouse, first 1000 rows only:
    engage import users.parquet --id-field id --max-records 1000 --token ...

  A CSV of user attributes, $set by the user_id column:
    engage import users.csv --id-field user_id --op set --token ...

  Group profiles:
    engage import companies.csv --groups --group-key company --group-id-field id --token ...

  Look before sending: write the request bodies to a folder:
    engage import users.ndjson --dry-run --out bodies/ --token ...";

const DELETE_ABOUT: &str = "\
Deletes the profiles named in the input: a file of ids, one per line (the default for a \
file that is not .json, .ndjson, .csv, .tsv or .parquet), or records of any input format whose \
id comes from --id-field (users) or --group-id-field with --groups and --group-key. Every \
other field is ignored.

For users, each deletion carries $ignore_alias: true, so that an id that is an alias of \
another user deletes nothing rather than the user it points to (Mixpanel otherwise \
follows the alias and deletes the original profile). --follow-aliases turns that off.

On a terminal it asks to type \"delete\" first; elsewhere it needs --yes. --dry-run shows \
what would be sent and deletes nothing. The report, progress, --failed file, journal and \
exit status are those of engage import.";

const DELETE_EXAMPLES: &str = "\
EXAMPLES:
  Look first, then delete the users listed one per line:
    engage delete churned.txt --dry-run --token ...
    engage delete churned.txt --token ...

  Ids in a CSV column, no prompt (a script):
    engage delete accounts.csv --id-field user_id --yes --token ...

  Group profiles:
    engage delete closed.txt --groups --group-key company --yes --token ...";

/// Options of `engage delete`: those of `engage import` that apply, and two of its own.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    import: ImportArgs,
    /// Do not ask: the profiles are deleted without a confirmation.
    #[arg(long, help_heading = "Delete")]
    yes: bool,
    /// Send deletions without $ignore_alias: an alias then deletes the profile it points to.
    #[arg(long, help_heading = "Delete")]
    follow_aliases: bool,
}

/// Which HTTP stack sends the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    /// hyper-util + rustls on tokio.
    Hyper,
    /// libcurl, concurrent transfers on a Multi handle.
    Curl,
    /// hyper over futures-io on async-std.
    AsyncStd,
}

/// Mixpanel's data residency regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegionChoice {
    /// api.mixpanel.com
    Us,
    /// api-eu.mixpanel.com
    Eu,
    /// api-in.mixpanel.com
    In,
}

/// The summary's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object on stdout: records, accepted, rejected, invalid, not_delivered,
    /// requests, retries, uncertain, elapsed_s, … and `reasons`: for each of invalid,
    /// rejected, not_delivered, uncertain and warnings, a list of {reason, count, examples:
    /// [{file, line}]}, most frequent first (at most five, then "other reasons").
    Json,
}

/// `NAME=VALUE` (the name not empty).
/// `--op`'s help, naming the operations of engage-core's table.
fn op_help() -> String {
    format!(
        "Flat records: the operation their properties go under ({}). Records that already carry an operation are sent as they are",
        input::shape::op_names().join(", ")
    )
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected NAME=VALUE")),
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(v)
    } else {
        Err("the timeout must be a number of seconds above 0, e.g. 0.5 or 30".into())
    }
}

fn parse_batch_size(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=2000).contains(&v) {
        Ok(v)
    } else {
        Err("Mixpanel takes 1 to 2000 updates per request".into())
    }
}

/// `--concurrency`: adaptive, or a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyArg {
    /// Found as the import goes.
    Auto,
    /// This many at most.
    Fixed(usize),
}

fn parse_concurrency(s: &str) -> Result<ConcurrencyArg, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(ConcurrencyArg::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(ConcurrencyArg::Fixed(n)),
        _ => Err("the concurrency is `auto` or a number from 1 to 256".into()),
    }
}

fn parse_body_cap(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|e| format!("{e}"))?;
    let most = engage_core::batch::MAX_RECORDS_PER_REQUEST
        * (engage_core::batch::MAX_UPDATE_BYTES + 1)
        + 2;
    if (1024..=most).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "the request body cap must be between 1024 and {most} bytes (the default is {})",
            engage_core::batch::DEFAULT_MAX_BODY_BYTES
        ))
    }
}

/// Options of `engage import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Input files; `-` is standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    pub files: Vec<String>,

    /// Input format, instead of detecting it from the extension (.ndjson/.jsonl, .json,
    /// .csv, .tsv, each optionally .gz, and .parquet).
    #[arg(long, value_enum, help_heading = "Input")]
    pub format: Option<Format>,
    /// Flat records: the field (column) holding the user's distinct_id. Default:
    /// `$distinct_id`, then `distinct_id`. Integer ids are sent as text.
    #[arg(
        long,
        visible_alias = "distinct-id-column",
        value_name = "NAME",
        help_heading = "Input"
    )]
    pub id_field: Option<String>,
    /// Flat records: the operation their properties go under. Records that already carry
    /// an operation are sent as they are.
    #[arg(
        long,
        value_name = "OP",
        value_parser = input::shape::parse_op,
        default_value = "set",
        help = op_help(),
        help_heading = "Input"
    )]
    pub op: OpKind,
    /// Group profiles: send to /groups (records carry $group_key and $group_id).
    #[arg(long, help_heading = "Input")]
    pub groups: bool,
    /// With --groups, flat records: the group key every record belongs to (e.g. company).
    /// Default: the record's `$group_key`.
    #[arg(long, value_name = "NAME", help_heading = "Input")]
    pub group_key: Option<String>,
    /// With --groups, flat records: the field holding the group id. Default: `$group_id`,
    /// then `group_id`.
    #[arg(
        long,
        visible_alias = "group-id-column",
        value_name = "NAME",
        help_heading = "Input"
    )]
    pub group_id_field: Option<String>,
    /// Flat records: leave out this field (repeatable). Applied first, to the input's names.
    #[arg(long, value_name = "NAME", help_heading = "Shaping flat records")]
    pub drop: Vec<String>,
    /// Flat records: rename a field (repeatable), after --drop.
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_pair, help_heading = "Shaping flat records")]
    pub rename: Vec<(String, String)>,
    /// Flat records: after --rename, map the usual plain names to Mixpanel's reserved
    /// properties, whatever their case: name, first_name, last_name, email, phone, avatar,
    /// created, city, region → $name, $first_name, …, and country → $country_code.
    #[arg(long, help_heading = "Shaping flat records")]
    pub reserved_names: bool,
    /// Flat records: leave out null properties (JSON null, Parquet null) instead of
    /// setting them to null. An empty CSV/TSV cell is never sent either way.
    #[arg(long, help_heading = "Shaping flat records")]
    pub remove_nulls: bool,
    /// Flat records: add this property to every update (repeatable; last). VALUE is typed
    /// like a CSV cell: 42, 1.5, true, or text.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_pair, help_heading = "Shaping flat records")]
    pub tag: Vec<(String, String)>,
    /// Read at most this many records (a trial run), then stop as if the input ended.
    #[arg(long, value_name = "N", help_heading = "Input")]
    pub max_records: Option<u64>,

    /// Project token, filled in where a record has none. Default: $MIXPANEL_TOKEN.
    /// Surrounding whitespace (a newline from `$(cat file)`) is trimmed with a notice; a
    /// token with spaces or control characters inside is refused.
    #[arg(
        long,
        env = "MIXPANEL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file",
        help_heading = "Target"
    )]
    pub token: Option<String>,
    /// Read the project token from this file (its first line), so it never shows in `ps`
    /// or the shell history. Default: $MIXPANEL_TOKEN_FILE.
    #[arg(
        long,
        value_name = "PATH",
        env = "MIXPANEL_TOKEN_FILE",
        help_heading = "Target"
    )]
    pub token_file: Option<PathBuf>,
    /// Replace a record's own different $token instead of rejecting the record.
    #[arg(long, help_heading = "Target")]
    pub override_token: bool,
    /// Mixpanel region.
    #[arg(long, value_enum, default_value = "us", help_heading = "Target")]
    pub region: RegionChoice,
    /// Any base URL instead of a region (a proxy, an emulator).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "emulator",
        help_heading = "Target"
    )]
    pub endpoint: Option<String>,
    /// Start the emulator in-process and import into it; at the end, print how many
    /// profiles it holds and one of them.
    #[arg(long, help_heading = "Target")]
    pub emulator: bool,

    /// HTTP stack.
    #[arg(long, value_enum, default_value = "hyper", help_heading = "Sending")]
    pub transport: TransportChoice,
    /// Requests in flight at once: `auto` (start at 10, grow while answers come back at a
    /// steady pace, cut on 429/503 or slower answers; within 1–64; after a 429, sending is
    /// also paced just under what the server accepted) or a fixed number (1–256).
    #[arg(long, default_value = "auto", value_parser = parse_concurrency, help_heading = "Sending")]
    pub concurrency: ConcurrencyArg,
    /// Updates per request (at most 2000).
    #[arg(long, default_value_t = 2000, value_parser = parse_batch_size, help_heading = "Sending")]
    pub batch_size: usize,
    /// Largest request body, in bytes (at least 1024).
    #[arg(long, default_value_t = engage_core::batch::DEFAULT_MAX_BODY_BYTES, value_parser = parse_body_cap, help_heading = "Sending")]
    pub max_body_bytes: usize,
    /// Send strict=0: Mixpanel then answers without per-record errors.
    #[arg(long, help_heading = "Sending")]
    pub no_strict: bool,
    /// Send ip=1: let Mixpanel geolocate profiles from this machine's address (off by
    /// default, which would put every profile in your data centre's city).
    #[arg(long, help_heading = "Sending")]
    pub geolocate: bool,
    /// Retries per request after the first attempt.
    #[arg(long, default_value_t = 9, help_heading = "Sending")]
    pub max_retries: u32,
    /// First backoff delay, doubling per retry, with jitter.
    #[arg(
        long,
        default_value_t = 2000,
        value_name = "MS",
        help_heading = "Sending"
    )]
    pub backoff_base_ms: u64,
    /// Longest backoff delay.
    #[arg(
        long,
        default_value_t = 60_000,
        value_name = "MS",
        help_heading = "Sending"
    )]
    pub backoff_max_ms: u64,
    /// Longest wait a server's Retry-After can impose, in seconds (longer ones are cut to
    /// this, with a note on stderr).
    #[arg(
        long,
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(0..=86_400),
        help_heading = "Sending"
    )]
    pub max_retry_after: u64,
    /// Send through this HTTP proxy, `http://[user:password@]host:port`, instead of the one
    /// HTTPS_PROXY/HTTP_PROXY/ALL_PROXY name (honoured by default, with NO_PROXY, the same
    /// way on every --transport). Its credentials are never printed.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "no_proxy",
        help_heading = "Sending"
    )]
    pub proxy: Option<String>,
    /// Connect directly, whatever the proxy environment variables say.
    #[arg(long, help_heading = "Sending")]
    pub no_proxy: bool,
    /// Per-request timeout in seconds; fractions allowed (0.5).
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_timeout, help_heading = "Sending")]
    pub timeout: f64,
    /// Never resend $add/$append after a failure that may have applied them; report them
    /// as not delivered instead.
    #[arg(long, help_heading = "Sending")]
    pub at_most_once: bool,

    /// Logs on stderr: -v one line per request (endpoint, records, bytes, status, latency,
    /// what happens next and why), -vv the engage crates' debug events, -vvv trace.
    /// RUST_LOG (target=level,…), when set, decides instead. Never the token or a record's
    /// properties; never on stdout.
    #[arg(short, long, action = clap::ArgAction::Count, help_heading = "Output")]
    pub verbose: u8,
    /// Validate and batch without sending.
    #[arg(long, help_heading = "Output")]
    pub dry_run: bool,
    /// With --dry-run: write each request body into this folder.
    #[arg(
        long,
        value_name = "DIR",
        requires = "dry_run",
        help_heading = "Output"
    )]
    pub out: Option<PathBuf>,
    /// Write every rejected, invalid or undelivered record here as NDJSON: the original
    /// record (an update object sent: as it was sent, minified, without its `$token`),
    /// its file and line, and the reason.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub failed: Option<PathBuf>,
    /// Keep a journal of the import in FILE: each batch's records, on disk before the
    /// batch is sent, and what became of them. If the import is killed or interrupted,
    /// `--resume FILE` finishes it without re-applying what went through. `auto`:
    /// FIRST_INPUT.engage-journal. Refused if FILE exists (resume it or remove it).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "resume",
        help_heading = "Output"
    )]
    pub journal: Option<PathBuf>,
    /// Resume the import the journal FILE recorded, on the same input and options: records
    /// it settled are skipped; records of batches that were in flight are resent if
    /// idempotent; $add/$append ones are resent and counted uncertain, or with
    /// --at-most-once withheld and listed in --failed (maybe_applied_before_crash). The
    /// journal goes on being written.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub resume: Option<PathBuf>,
    /// The summary's format.
    #[arg(long, value_enum, default_value = "text", help_heading = "Output")]
    pub report: ReportFormat,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long, conflicts_with = "quiet", help_heading = "Output")]
    pub progress: bool,
    /// No progress and no text summary (a --report json object is still printed).
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

/// Writes `bytes` to stdout; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> i32 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            term::err(format_args!("engage: cannot write to stdout: {e}"));
            1
        }
        _ => 0,
    }
}

/// `engage man`: the top page on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> i32 {
    use clap::CommandFactory as _;
    let command = Cli::command();
    let mut page = Vec::new();
    let result = match dir {
        Some(dir) => clap_mangen::generate_to(command, dir),
        None => clap_mangen::Man::new(command).render(&mut page),
    };
    match result {
        Ok(()) if dir.is_none() => write_stdout(&page),
        Ok(()) => 0,
        Err(e) => {
            term::err(format_args!("engage man: {e}"));
            1
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; bad flags exit 1 (not clap's 2, which
            // means "some records failed" here).
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
        Command::Import(args) => run::import(*args),
        Command::Delete(args) => {
            let DeleteArgs {
                import,
                yes,
                follow_aliases,
            } = *args;
            let shaping = import.op != OpKind::Set
                || !import.drop.is_empty()
                || !import.rename.is_empty()
                || !import.tag.is_empty()
                || import.reserved_names
                || import.remove_nulls;
            if shaping {
                term::err(
                    "engage delete: --op, --drop, --rename, --tag, --reserved-names and --remove-nulls have no meaning here",
                );
                1
            } else {
                run::delete(import, yes, follow_aliases)
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "engage", &mut out);
            write_stdout(&out)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Serve(args) => match engage_emulator::run_cli(&args) {
            Ok(()) => 0,
            Err(e) => {
                term::err(format_args!(
                    "engage serve: {}",
                    term::clean(&e.to_string())
                ));
                1
            }
        },
    };
    std::process::exit(code);
}
