"""The claims study's report.md: summary first, then the design, every comparison, figures
with captions, the training record and the exclusions."""

from __future__ import annotations

from toy_problems.study_config import StudyConfig

SECTIONS = (
    ("C7", ("C7", "C7 control"), ("c7_tv.png",)),
    ("C16", ("C16",), ("c16_far_field.png", "landscape_")),
    ("C26", ("C26 frozen", "C26 training"), ("c26.png",)),
    ("C27", ("C27",), ("c27.png", "chains_")),
    ("C28", ("C28", "C28 contrast"), ("c28.png",)),
)


def design(cfg: StudyConfig) -> list[str]:
    return [
        "## Design (fixed in config.json before any training)",
        "",
        (f"**Models.** Every method trains the same energy E_θ(x) = MLP_θ(x) + ‖x‖²/(2R²) "
         f"(Swish MLP {cfg.depth}×{cfg.hidden}; R = half the data box, so Z_θ is finite), "
         f"batch {cfg.batch_size}, {cfg.n_steps} sampler steps per update (ULA eq. 1, "
         f"λ = {cfg.step_size:g}, T = 1, unless the method says otherwise), replay buffer "
         f"{cfg.buffer_size} per seed, Adam β = ({cfg.beta1:g}, 0.999), {cfg.dtype}. "
         f"The {cfg.seeds} seeds of one (method, target) are one vectorised ensemble "
         "(`ebmref.ensemble.StackedMLPEnergy` inside `ConfinedEnergy`): member g is seed "
         f"{cfg.seed_offset} + g (its own initialisation, chain noise and buffer); **all members "
         "share the target's one draw of training data**, so the spread over seeds is the "
         "spread of training, not of data. ring8_hd (C16) is ring8 × N(0, 0.2²)⁴ in 6-D; its "
         "models are factorised, E = MLP(x₁, x₂) + Σⱼ MLPⱼ(xⱼ) (the four one-coordinate "
         f"networks {cfg.depth}×{cfg.hidden_1d}), so its likelihood is exact (one 2-D and four "
         "1-D quadratures); the sampler still runs in 6-D, where CD's chains from the data "
         "never visit most of the volume. "
         + "; ".join(f"{t} takes each method's setting tuned on {src}"
                     for t, src in cfg.reuse_tuning.items()) + "."),
        "",
        (f"**One procedure for every method.** Data: {cfg.n_train} training, {cfg.n_val} "
         f"validation, {cfg.n_test} test points per target. Tuning: every (lr, l2) in "
         f"lr ∈ {cfg.lr_grid} × l2 ∈ {cfg.l2_grid} with {cfg.tune_seeds} seeds (0 … "
         f"{cfg.tune_seeds - 1}), all as one ensemble (per-member rates and penalties); the "
         "setting with the lowest mean best validation NLL is chosen. Training (tuning and "
         f"final alike): the exact validation NLL of every member every {cfg.eval_every} "
         f"updates (Simpson quadrature, {cfg.val_points_2d}² / {cfg.val_points_1d} points on "
         f"the data box widened {cfg.grid_expand}×); each member keeps its best parameters "
         f"(an improvement must exceed {cfg.min_delta:g} nats); stop when no member improved "
         f"for {cfg.patience} evaluations (not before {cfg.min_updates} updates) or at "
         f"{cfg.cap} updates. Scoring: each member on its own (`ens.member(g)`), fine "
         f"quadrature ({cfg.grid_points_2d}² / {cfg.grid_points_1d} points per data box, on the "
         f"box widened {cfg.grid_expand}×, then doubled up to {cfg.max_expand}× until the mass "
         f"beyond it is below {cfg.leak_tol:g} nats); a member that stays above is flagged "
         "*leak* and not scored, non-finite energies flag it *diverged*."),
        "",
        (f"**Decisions.** `ebmref.verdict` only: per comparison an exact permutation test "
         f"(≤ 10 values per arm; sign flips when paired) or Welch's t, two-sided, the verdict "
         f"in the predicted direction at α = {cfg.alpha:g} after Holm's correction over the "
         "comparisons of one experiment (m in each row); effect = mean(a) − mean(b) with its "
         "95 % t interval; the minimum detectable effect (80 % power at α/m) when not "
         f"significant. Non-inferiority rows (C7 margin {cfg.c7_margin:g} TV; C27's data→mode "
         f"margin {cfg.c27_margin:g}) test the arm against the margin, so their Δ is "
         "(excess − margin) and a *verified* means the excess lies significantly below the "
         "margin. Seeds flagged leak/diverged are excluded from a comparison and listed in the "
         "training table."),
        "",
    ]


def c7_table(cfg: StudyConfig, details: dict) -> list[str]:
    """Mean TV to the exact law by chain length: models and control, per target."""
    head = "| target | " + " | ".join(f"{n} steps" for n in cfg.chain_lengths) + " |"
    out = [head, "|" + " --- |" * (len(cfg.chain_lengths) + 1)]
    for t in cfg.c7_targets:
        for name, rows in (("NLL model vs p_θ", details["chains"]["models"][f"nll/{t}"]["members"]),
                           ("true energy vs p_data", details["chains"]["control"][t]["members"])):
            curves = [r["tv_noise"] for r in rows if r.get("tv_noise") is not None]
            floors = [r["floor"] for r in rows if r.get("floor") is not None]
            if curves:
                means = [sum(c[i] for c in curves) / len(curves)
                         for i in range(len(cfg.chain_lengths))]
                out.append(f"| {t}: {name} (floor {sum(floors) / len(floors):.3f}) | "
                           + " | ".join(f"{v:.3f}" for v in means) + " |")
    return out


def c28_table(cfg: StudyConfig, details: dict) -> list[str]:
    out = [("| target | T | in-mode chains in p_θ's heavier mode | exact p_θ^(1/T) | chains "
            "in a mode |"), "| --- | --- | --- | --- | --- |"]
    for t in cfg.c28_targets:
        rows = [r for r in details["funnel"][t] if r is not None]
        for temp in cfg.temperatures:
            k = f"{temp:g}"
            vals = [r["by_t"][k] for r in rows]
            out.append(f"| {t} | {k} | {sum(v['frac_major'] for v in vals) / len(vals):.3f} | "
                       f"{sum(v['tempered_major'] for v in vals) / len(vals):.3f} | "
                       f"{sum(v['frac_in_modes'] for v in vals) / len(vals):.3f} |")
    return out


def edge_note(jobs: dict) -> list[str]:
    """How many chosen settings sit at an end of their grid (the optimum may lie beyond)."""
    tuned = [j for j in jobs.values() if not any("reused_from" in r for r in j["tuning"])]
    if not tuned:
        return []
    notes = []
    for key in ("lr", "l2"):
        grid = {r[key] for r in tuned[0]["tuning"]}
        at_edge = sum(1 for j in tuned if len(grid) > 1 and j[key] in (min(grid), max(grid)))
        notes.append(f"{key}: {at_edge} of {len(tuned)}")
    return [("Chosen settings at an end of their grid (the optimum may lie beyond it; a wider "
             "grid did not fit the time budget): " + "; ".join(notes) + "."), ""]


def report_markdown(cfg: StudyConfig, command: str, fams, c28, jobs, timing, env, figs,
                    extra, summary, rows_table, jobs_table, tuning_table) -> str:
    excluded, details = extra["excluded"], extra["details"]
    lines = [
        "# Toy claims study: converged, tuned models and pre-registered verdicts",
        "",
        (f"Generated by `{command}`"
         + (" — SMOKE RUN: tiny budgets, the numbers mean nothing." if cfg.quick else ".")),
        (f"Machine: {env['processor']}, {env['cpus']} CPUs, torch {env['torch']}, "
         f"{env['threads']} thread(s). Wall time {timing['wall_s']:.0f} s, process CPU time "
         f"{timing['process_cpu_s']:.0f} s (tuning, training and scoring "
         f"{timing['train_cpu_s']:.0f} s, probes {timing['probes_cpu_s']:.0f} s)"
         + (f"; {len(timing['jobs_from_cache'])} job(s) were trained in an earlier session and "
            "loaded from the cache: counted with their recorded times, which include a scoring "
            f"pass that was redone here ({timing['rescore_cpu_s']:.0f} s CPU, also counted)"
            if timing["jobs_from_cache"] else "") + "; 1-min load average "
         f"{timing['load_average_1min_start']:.1f} at the start, "
         f"{timing['load_average_1min_end']:.1f} at the end."),
        "",
        "## Summary of findings",
        "",
        *summary,
        "",
        *design(cfg),
    ]
    fig_by_name = dict(figs)
    for claim, exps, fig_keys in SECTIONS:
        lines += [f"## {claim}", ""]
        if claim == "C28" and c28 is not None:
            lines += [f"Claim-level reading (`ebmref.verdict.qualified`): **{c28.line()}**", ""]
        for e in exps:
            if e in fams:
                lines += [f"**{e}** (m = {len(fams[e])} comparisons, Holm within this family). "
                          "Registered prediction(s): " + "; ".join(
                              extra["predictions"].get(e, [])) + ".", "",
                          rows_table(fams[e]), ""]
                if excluded.get(e):
                    lines += ["Excluded values:", "", *excluded[e], ""]
        if claim == "C7":
            lines += [("Mean TV to the exact law by chain length (each seed's own floor is the "
                       "TV of as many exact draws):"), "", *c7_table(cfg, details), ""]
        if claim == "C28":
            lines += ["Means over seeds by temperature:", "", *c28_table(cfg, details), ""]
        for name, caption in fig_by_name.items():
            if any(name.startswith(k) for k in fig_keys):
                lines += [f"![{name}]({name})", "", f"*Figure — {caption}*", ""]
    lines += ["## Training record (budget used per method)", "",
              ("Chosen setting ('edge': at the end of its grid), updates run and why training "
               "stopped, the update at which "
               "members reached their best validation NLL, scored seeds (flags), test NLL gap "
               "(test NLL − H(p_data) on the test points) and far-field mass, mean ± sd over "
               "scored seeds."), "", jobs_table(jobs), "",
              "Tuning: mean best validation NLL per setting (bold: chosen).", "",
              tuning_table(jobs), ""]
    lines += edge_note(jobs)
    grid_err = [j["val_grid_error"] for j in jobs.values() if j["val_grid_error"] is not None]
    if grid_err:
        lines += [(f"The coarse validation grid against the fine one: |validation NLL "
                   f"difference| ≤ {max(grid_err):.1e} nats over all scored members."), ""]
    return "\n".join(lines) + "\n"
