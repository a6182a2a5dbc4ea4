//! The stage graph as data: every container stage a build can have, what each one reads from
//! the others, and which of them a given build runs. The runner (`Build::walk`), `shell
//! --stage`, `bench`'s floor, `--timings` and the report all read it from here.

use std::fmt;

/// A container stage of a build. Its command-line spelling (`--stage fips-provider`) is the
/// name the report, the logs and the cache entries use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Stage {
    /// libcrypto, libssl and the openssl command (and the FIPS provider when it is the same
    /// release).
    Openssl,
    /// The FIPS provider built from its own validated release.
    FipsProvider,
    /// A cross build's interpreter for its Python steps: the native openssl stage...
    NativeOpenssl,
    /// ...and the native python stage, keyed exactly as a native build's.
    NativePython,
    /// CPython, configured against the openssl stage's output.
    Python,
    /// The shipped tree: the stages' outputs merged, stripped, with its setup script.
    Finalize,
}

impl Stage {
    /// Every stage, in the order a build runs those it has.
    pub const ALL: [Stage; 6] = [
        Stage::Openssl,
        Stage::FipsProvider,
        Stage::NativeOpenssl,
        Stage::NativePython,
        Stage::Python,
        Stage::Finalize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Openssl => "openssl",
            Stage::FipsProvider => "fips-provider",
            Stage::NativeOpenssl => "native-openssl",
            Stage::NativePython => "native-python",
            Stage::Python => "python",
            Stage::Finalize => "finalize",
        }
    }

    /// The stages whose outputs this one reads, when the build has them.
    pub fn deps(self) -> &'static [Stage] {
        match self {
            Stage::Openssl | Stage::FipsProvider | Stage::NativeOpenssl => &[],
            Stage::NativePython => &[Stage::NativeOpenssl],
            Stage::Python => &[Stage::Openssl, Stage::NativePython],
            Stage::Finalize => &[Stage::Python, Stage::FipsProvider, Stage::NativePython],
        }
    }

    /// Whether the stage runs in the builder image of the engine's own architecture even in a
    /// cross build (it makes a build tool, not part of the shipped tree).
    pub fn is_native_tool(self) -> bool {
        matches!(self, Stage::NativeOpenssl | Stage::NativePython)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of one build, which decides the stages it has.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The FIPS provider comes from another OpenSSL release than the libraries.
    pub separate_provider: bool,
    /// The target is not the engine's own architecture.
    pub cross: bool,
}

/// The stages a build of `shape` runs, in order: every stage comes after those it reads.
pub fn plan(shape: Shape) -> Vec<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|s| match s {
            Stage::FipsProvider => shape.separate_provider,
            Stage::NativeOpenssl | Stage::NativePython => shape.cross,
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plan_runs_a_stage_after_everything_it_reads() {
        for separate_provider in [false, true] {
            for cross in [false, true] {
                let plan = plan(Shape {
                    separate_provider,
                    cross,
                });
                for (i, stage) in plan.iter().enumerate() {
                    for dep in stage.deps() {
                        if let Some(at) = plan.iter().position(|s| s == dep) {
                            assert!(at < i, "{stage} runs before {dep} in {plan:?}");
                        }
                    }
                }
                assert_eq!(plan.first(), Some(&Stage::Openssl));
                assert_eq!(plan.last(), Some(&Stage::Finalize));
                assert_eq!(plan.contains(&Stage::FipsProvider), separate_provider);
                assert_eq!(plan.contains(&Stage::NativePython), cross);
            }
        }
    }

    #[test]
    fn the_command_line_spells_a_stage_as_its_name() {
        use clap::ValueEnum;
        for stage in Stage::ALL {
            let value = stage.to_possible_value().unwrap();
            assert_eq!(value.get_name(), stage.name());
            assert_eq!(Stage::from_str(stage.name(), false), Ok(stage));
        }
    }
}
