//! `fence_quorate`: FenceAgentAPI agent for quorate's virtual power switch.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = powerswitch::fence_quorate::main_with(
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
