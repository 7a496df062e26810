//! `tfo completions SHELL` and `tfo man --out DIR`: what installing tfo as a
//! tool takes besides the binary, generated from the same clap definitions
//! as `--help` (clap_complete, clap_mangen), so they never drift from it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Print a shell completion script for tfo.
///
/// Install it where your shell looks:
///   tfo completions bash > /etc/bash_completion.d/tfo
///   tfo completions zsh  > "${fpath[1]}/_tfo"
///   tfo completions fish > ~/.config/fish/completions/tfo.fish
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Write man pages: tfo.1 and one page per subcommand (tfo-serve.1, ...).
///
/// Read one with `man -l DIR/tfo-serve.1`; install them with
///   sudo tfo man --out /usr/local/share/man/man1 && sudo mandb
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ManArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "tfo", &mut script);
    crate::out::text(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    let mut pages = vec![("tfo".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tfo-{}", sub.get_name());
        // The page's title and synopsis name the command as it is typed.
        // clap takes a 'static name (without its `string` feature); once per page.
        let title: &'static str = name.clone().leak();
        pages.push((name, sub.clone().name(title).bin_name(format!("tfo {}", sub.get_name()))));
    }
    for (name, page) in pages {
        let path = args.out.join(format!("{name}.1"));
        let mut file = crate::output_file::OutputFile::create(&path)?;
        clap_mangen::Man::new(page).render(file.file()).with_context(|| format!("writing {}", path.display()))?;
        file.commit()?;
        written.push(path);
    }
    outln!("wrote {} man pages to {} (read one: man -l {})", written.len(), args.out.display(), written[0].display())?;
    Ok(ExitCode::SUCCESS)
}
