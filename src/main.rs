//! The `vbc-server` command line.

use clap::{Parser, Subcommand};

use vbc_server::config::ServeConfig;
use vbc_server::server;

/// mimalloc instead of glibc malloc: the server allocates heavily from many threads (JSON trees,
/// engine blocks), where glibc's arena locks and consolidation cost about a third of ingest CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// FHIR R4 server for outcomes-based drug contracts.
#[derive(Parser)]
#[command(name = "vbc-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// parsed once at start: the size of the serve settings does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server on the embedded store.
    Serve(ServeConfig),
    /// Load realistic patient Bundles with concurrent clients and print throughput and latency.
    Bench(vbc_server::bench::BenchConfig),
    /// Rebuild the search index of a stopped server's data directory (after a definition change).
    Reindex(vbc_server::maintenance::MaintenanceConfig),
    /// Time full evaluation and incremental updates of the outcome engine on generated patients.
    BenchOutcomes(vbc_server::bench::outcomes::OutcomeBenchConfig),
    /// Time a contract's report set on generated patients and a payer's MeasureReport search.
    BenchReports(vbc_server::bench::reports::ReportBenchConfig),
    /// Check contract definitions, or load them into a stopped server's data directory.
    LoadContract(vbc_server::load_contract_command::LoadContractConfig),
    /// Check that the search index matches the stored resources (exit status 1 if not).
    CheckIndex(vbc_server::maintenance::MaintenanceConfig),
    /// Verify the audit trail's hash chain of a stopped server (exit status 1 at a broken link).
    AuditVerify(vbc_server::maintenance::AuditVerifyConfig),
    /// Copy a stopped server's data directory onto fjall (from sled, which no longer serves;
    /// every version, the index and the audit trail), then check the copy.
    Migrate(vbc_server::migrate_command::MigrateConfig),
    /// Time authenticated reads and searches against the same without auth.
    BenchAuth(vbc_server::bench::auth::AuthBenchConfig),
    /// Write a synthetic population for a contract with the expected per-patient results.
    Synth(vbc_server::synth::SynthConfig),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(cfg) => {
            server::init_logging(cfg.log_format);
            runtime.block_on(server::serve(cfg))
        }
        Command::Bench(cfg) => runtime.block_on(vbc_server::bench::run(cfg)),
        Command::BenchOutcomes(cfg) => vbc_server::bench::outcomes::run(&cfg),
        Command::BenchReports(cfg) => runtime.block_on(vbc_server::bench::reports::run(cfg)),
        Command::LoadContract(cfg) => {
            runtime.block_on(vbc_server::load_contract_command::run(&cfg))
        }
        Command::Synth(cfg) => vbc_server::synth::run(&cfg),
        Command::Migrate(cfg) => vbc_server::migrate_command::migrate(&cfg).and_then(|m| {
            let audit = m.audit.map_or(0, |a| a.pairs);
            println!(
                "migrated {} to {}: {} key-value pairs ({} bytes), audit trail {} pairs ({} events verified), {} other files; index: resources {} keys {} missing {} orphaned {}",
                m.data.from.name(),
                m.data.to.name(),
                m.data.pairs,
                m.data.bytes,
                audit,
                m.audit_events,
                m.files,
                m.index.resources,
                m.index.keys,
                m.index.missing,
                m.index.orphaned
            );
            if m.index.consistent() {
                Ok(())
            } else {
                Err(vbc_server::error::FhirError::Storage(
                    "the copy's index does not match its resources".into(),
                ))
            }
        }),
        Command::Reindex(cfg) => vbc_server::maintenance::reindex(&cfg).map(|n| {
            println!("reindexed {n} resources");
        }),
        Command::AuditVerify(cfg) => match vbc_server::maintenance::audit_verify(&cfg) {
            Ok(v) => match v.broken {
                None => {
                    println!("audit chain intact: {} events", v.events);
                    Ok(())
                }
                Some((seq, why)) => {
                    println!("audit chain BROKEN at event {seq}: {why}");
                    Err(vbc_server::error::FhirError::Storage(format!(
                        "the audit chain is broken at event {seq}"
                    )))
                }
            },
            Err(e) => Err(e),
        },
        Command::BenchAuth(cfg) => runtime.block_on(vbc_server::bench::auth::run(cfg)),
        Command::CheckIndex(cfg) => match vbc_server::maintenance::check_index(&cfg) {
            Ok(r) => {
                println!(
                    "resources {} index keys {} missing {} orphaned {}",
                    r.resources, r.keys, r.missing, r.orphaned
                );
                if r.consistent() {
                    Ok(())
                } else {
                    Err(vbc_server::error::FhirError::Storage(
                        "the index does not match the resources".into(),
                    ))
                }
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vbc-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
