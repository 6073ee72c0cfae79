fn main() -> std::process::ExitCode {
    loop_runner::cli::main()
}
