"""`llmrec benchmark --suite configs/benchmarks/NAME.yaml --output_dir DIR`: tune, seed, test, report.

Every model of the suite gets the same number of validation trials (a grid or a seeded random search) on each data
set; each model's configuration is selected on the FULL validation split only; the selected one is run with every
seed of the suite and each seed run is tested once; ``DIR/report.{md,json,png}`` gives mean ± std over seeds and a
paired bootstrap of the best LLM against the best baseline (``llmrec.benchmark``).

    llmrec benchmark --suite S --output_dir DIR                 # run everything here, one trial at a time
    llmrec benchmark --suite S --output_dir DIR --jobs 4        # 4 single-thread trial processes at a time
    llmrec benchmark ... --jobs 4 --time_limit_h 23             # start no trial that would end after 23 h
    touch DIR/STOP                                              # drain a running call: no further trial starts
    llmrec benchmark --suite S --output_dir DIR --plan true     # DIR/plan.txt: one command per tuning trial
    llmrec benchmark --suite S --output_dir DIR --collect true  # seed-phase plan, then (once run) the report
    llmrec benchmark --suite S --output_dir DIR --records REC   # also export finished trials to REC / restore them
    llmrec benchmark --render                                   # README.md, docs/results.md blocks from their JSON
    llmrec benchmark --render --check                           # exit 1 when a block differs from its report

``--render`` (run from the repository root) rewrites every ``<!-- benchmark:begin REPORT.json [VIEW] -->`` ...
``<!-- benchmark:end -->`` block of ``--files`` from the committed report it names (``llmrec.benchmark.blocks``).

Exit codes: 0 done (report written, or with --plan the plan written, or with --render the blocks up to date); 1
when trials are still missing: with --collect (DIR/plan.txt lists them), or a run drained by --time_limit_h or
DIR/STOP (the same command continues it); 1 with --render --check when a block differs; 2 a user error (one line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmrec.config import ConfigError, parse_config

HELP = "Tune every model with the same budget on full validation, run seeds, test once, write one report."
RENDERED_FILES = ("README.md", "docs/results.md")


@dataclass
class BenchmarkConfig:
    """Options of ``llmrec benchmark``."""

    suite: str = field(default="", metadata={"help": "Suite file (configs/benchmarks/NAME.yaml)."})
    output_dir: str = field(
        default="",
        metadata={"help": "Benchmark directory: data/, trials/, plan.txt, report.*.", "aliases": ["--out"]},
    )
    plan: bool = field(
        default=False,
        metadata={"help": "Write DIR/plan.txt (one command per pending trial of the current phase); run nothing."},
    )
    collect: bool = field(
        default=False,
        metadata={"help": "Build the report from finished trial directories (else plan the missing ones)."},
    )
    jobs: int = field(
        default=0,
        metadata={"help": "0: run trials one at a time in this process; N: N single-thread subprocesses at a time."},
    )
    time_limit_h: float = field(
        default=0.0,
        metadata={
            "help": "Hours: after them no further trial starts, nor one expected (its model's mean wall time so far) "
            "to end past them; running trials finish, and the call exits 1 with trials left. 0: no limit. A file "
            "DIR/STOP has the same effect at once."
        },
    )
    device: str = field(default="cpu", metadata={"help": "Device for re-scoring the seed runs' test users."})
    records: str = field(
        default="",
        metadata={
            "help": "Trial-record directory (e.g. docs/benchmarks/NAME/records, committed): every finished trial "
            "is exported there (options, metrics, test ranks; no weights) and missing trials are restored from it, "
            "so a benchmark can run over many sessions or machines."
        },
    )
    render: bool = field(
        default=False,
        metadata={
            "help": "Rewrite every `<!-- benchmark:begin REPORT.json [VIEW] -->` ... `<!-- benchmark:end -->` block "
            "of --files from the report JSON it names (paths relative to the current directory, the repository "
            "root); needs no suite."
        },
    )
    check: bool = field(
        default=False,
        metadata={"help": "With --render: write nothing; exit 1 with a one-line summary when a block differs."},
    )
    files: list[str] = field(
        default_factory=lambda: list(RENDERED_FILES), metadata={"help": "Markdown files that --render scans."}
    )

    def __post_init__(self):
        if self.check and not self.render:
            raise ConfigError("check: only with --render")
        if self.render:
            given = [
                f"--{n}"
                for n in ("suite", "output_dir", "plan", "collect", "jobs", "records", "time_limit_h")
                if getattr(self, n)
            ]
            if given:
                raise ConfigError(f"render: --render re-renders committed reports only; drop {', '.join(given)}")
            return
        if not self.suite:
            raise ConfigError("suite: a suite file is required (--suite configs/benchmarks/NAME.yaml)")
        if not self.output_dir:
            raise ConfigError("output_dir: a benchmark directory is required (--output_dir DIR)")
        if self.plan and self.collect:
            raise ConfigError("plan/collect: pass at most one of them")
        if self.jobs < 0:
            raise ConfigError(f"jobs: must be >= 0, got {self.jobs}")
        if self.jobs and (self.plan or self.collect):
            raise ConfigError("jobs: --plan and --collect run no trial; drop --jobs")
        if self.time_limit_h < 0:
            raise ConfigError(f"time_limit_h: must be >= 0 hours (0: no limit), got {self.time_limit_h}")
        if self.time_limit_h and (self.plan or self.collect):
            raise ConfigError("time_limit_h: --plan and --collect run no trial; drop --time_limit_h")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device: must be 'cpu' or 'cuda', got {self.device!r}")


def main(argv: list[str]) -> int:
    cfg = parse_config(BenchmarkConfig, argv, prog="llmrec benchmark", description=HELP)
    if cfg.render:
        from llmrec.benchmark.blocks import render_files

        outcome = render_files(cfg.files, ".", check=cfg.check)
        print(outcome.summary(cfg.check))
        return 1 if cfg.check and outcome.stale else 0
    from llmrec.benchmark import load_suite, run_benchmark

    mode = "plan" if cfg.plan else "collect" if cfg.collect else "run"
    outcome = run_benchmark(
        load_suite(cfg.suite),
        cfg.output_dir,
        mode=mode,
        jobs=cfg.jobs,
        device=cfg.device,
        records=cfg.records or None,
        time_limit_h=cfg.time_limit_h,
    )
    if outcome.report is not None:
        for block in outcome.report["datasets"]:
            boot = block["bootstrap"]
            if boot:
                b = boot[boot["verdict_metric"]]
                print(f"{block['name']}: {boot['llm']} vs {boot['baseline']}: {boot['verdict_metric']} "
                      f"{b['diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}] -> {boot['verdict']}")  # fmt: skip
    return 1 if outcome.status == "pending" and mode != "plan" else 0
