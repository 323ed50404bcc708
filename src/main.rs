fn main() -> std::process::ExitCode {
    verillm_tui::cli::main()
}
