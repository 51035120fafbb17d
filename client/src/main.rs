//! `qga-client`: see the library's `cli` module for the command and its exit statuses.

fn main() -> std::process::ExitCode {
    qga_client::cli::main()
}
