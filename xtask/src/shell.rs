//! `shell`: an interactive container holding exactly one stage's inputs, or a failed stage's state.

use anyhow::{Context as _, Result, bail};
use xshell::Shell;

use crate::build::Build;
use crate::config::BuildConfig;
use crate::engine::Engine;
use crate::flags;
use crate::pipeline::Failed;
use crate::progress::{Reporter, Terminal};

impl flags::ShellCmd {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.failed {
            let (engine, failed, image) = copy_failed(sh, &self.build)?;
            Terminal::new().message(&format!(
                "stage {} failed here (log: {}); this is a copy of its container: the build tree is under /build and \
                 /build/stage.sh is the script. exit to leave.",
                failed.stage,
                failed.log.display()
            ));
            engine.enter(&image, "/build", &["bash"])?;
            return Ok(());
        }
        let ui = Terminal::new();
        let stage_name = self.stage.expect("clap requires --stage without --failed");
        let build = Build::start(sh, &BuildConfig::from_args(&self.build)?, &ui)?;
        let (_, stage) = build.run_until(Some(stage_name), &ui)?;
        let stage = stage.expect("the stage name was checked");
        let builder = build.runner_for(stage_name);
        let what = format!("shell-{stage_name}");
        let container = builder.create_with_inputs(&stage, &what, &stage.env(&builder), true)?;
        ui.message(&format!(
            "stage {stage_name}: inputs are under /build, the script is /build/stage.sh and its environment is set \
             (also in /build/env).\nrun `sh -eux /build/stage.sh` to run the stage; exit to leave (the container is removed)."
        ));
        let result = container.attach();
        drop(container);
        result?;
        Ok(())
    }
}

/// Commits the container a failed stage left to an image: the engine, the failure's record and
/// the image.
fn copy_failed(sh: &Shell, args: &flags::BuildArgs) -> Result<(Engine, Failed, String)> {
    let cache = crate::cache::Cache::open(args.sources.cache.as_deref())?;
    let engine = Engine::detect(sh, args.engine.as_deref())?;
    let record = crate::host::Host::new(sh, &engine, &cache).failed_record();
    let bytes = std::fs::read(&record).with_context(|| {
        format!(
            "no failed stage is recorded ({} is missing); no build has failed here yet",
            record.display()
        )
    })?;
    let failed: Failed = serde_json::from_slice(&bytes)
        .with_context(|| format!("cannot parse {}", record.display()))?;
    let image = format!("python-fips-debug:{}", failed.stage);
    if engine.commit(sh, &failed.container, &image).is_err() {
        bail!(
            "the failed container {} of stage {} is gone (removed by hand?); re-run the build to reproduce the failure",
            failed.container,
            failed.stage
        );
    }
    Ok((engine, failed, image))
}
