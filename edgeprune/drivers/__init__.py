"""What the commands run: the build pipeline, sweeps, checks, analysis, verification, export,
and the stage cache the build keys its stages in. Drivers call stages and libraries; only the
command line calls drivers."""
