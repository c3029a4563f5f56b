"""Promote a new model version to production if it beats production and the floor, then publish.

    candidate -> compare -> approved? -> publish_forecasts -> switch_production

Scheduled on the model-version asset that iot_training's register task updates. The candidate's
chosen model per series (the lower holdout MAE of Prophet and the baseline) must beat the naive
floor and the production model, scored on the candidate's own holdout days. The production
pointer is switched last, by one atomic PUT: if any step fails or the candidate loses,
production stays exactly as it was.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag, task
from iot_common import CONFIG, DEFAULT_ARGS, MODEL_VERSIONS, PRODUCTION_MODEL, store

log = logging.getLogger(__name__)


@dag(
    dag_id="iot_deploy",
    schedule=[MODEL_VERSIONS],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,  # promotions one after the other: each compares with the current production
    default_args=DEFAULT_ARGS,
    params={"version": Param("", type="string", description="version to consider (empty: the event's)")},
    tags=["iot", "deploy"],
)
def iot_deploy():
    @task
    def candidate(params=None, triggering_asset_events=None) -> dict:
        """The model version to consider: the newest one the triggering events name."""
        from r3e_testbed.pipeline.registry import read_manifest

        version = params.get("version") or ""
        if not version and triggering_asset_events:
            events = [e for batch in triggering_asset_events.values() for e in batch]
            version = next((e.extra.get("version") for e in reversed(events) if e.extra.get("version")), "")
        if not version:
            raise ValueError("no model version: the triggering events name none and params.version is empty")
        manifest = read_manifest(store(CONFIG.models_bucket), version)
        return {"version": version, "selected": {s: r["selected"] for s, r in manifest["series"].items()}}

    @task
    def compare(chosen: dict) -> dict:
        """Score production on the candidate's holdout days; decide."""
        from r3e_testbed.pipeline.evaluate import decide_promotion, holdout_frame, score_model
        from r3e_testbed.pipeline.registry import production_models, read_manifest, read_production

        models = store(CONFIG.models_bucket)
        manifest = read_manifest(models, chosen["version"])
        series = manifest["series"]
        pointer = read_production(models)
        if pointer is not None and pointer["version"] == chosen["version"]:
            return {"promote": False, "reasons": [f"{chosen['version']} is already in production"]}
        candidate_scores = {s: series[s][kind] for s, kind in chosen["selected"].items()}
        floor = {s: series[s]["naive"] for s in chosen["selected"]}
        production = None
        if pointer is not None:
            production = {
                s: score_model(kind, model, holdout_frame(series[s]["actuals"]))
                for s, (kind, model) in production_models(models, pointer).items()
                if s in series
            }
        decision = decide_promotion(candidate_scores, production, floor)
        decision["production_version"] = None if pointer is None else pointer["version"]
        return decision

    @task.short_circuit
    def approved(decision: dict) -> bool:
        """Stop here (production unchanged) unless the candidate won on every series."""
        for reason in decision["reasons"]:
            log.info("not promoted: %s", reason)
        return bool(decision["promote"])

    @task
    def publish_forecasts(chosen: dict) -> dict:
        """The 30-day forecast of every series, written under the version's forecast prefix."""
        from r3e_testbed.pipeline.forecast import PUBLISHED_DAYS
        from r3e_testbed.pipeline.registry import forecast_csv, forecast_key, read_manifest, version_models
        from r3e_testbed.pipeline.train import forecast_model

        models = store(CONFIG.models_bucket)
        loaded = version_models(models, read_manifest(models, chosen["version"]), chosen["selected"])
        keys = {}
        for series, (kind, model) in sorted(loaded.items()):
            keys[series] = forecast_key(chosen["version"], series)
            models.put(keys[series], forecast_csv(forecast_model(kind, model, PUBLISHED_DAYS)))
        return keys

    @task(outlets=[PRODUCTION_MODEL])
    def switch_production(chosen: dict, forecasts: dict, decision: dict, outlet_events=None) -> dict:
        """Point production at the candidate: one PUT of the pointer, the last write of the run.

        Safe to retry: compare stops a run whose candidate is in production already, and runs go one
        at a time, so a pointer naming the candidate here was written by an earlier try of this task
        (lost after its PUT), and the retry promotes nothing twice.
        """
        from r3e_testbed.pipeline.registry import promote, read_manifest, read_production

        models = store(CONFIG.models_bucket)
        pointer = read_production(models)
        if pointer is not None and pointer["version"] == chosen["version"]:
            log.info("production is %s already: an earlier try switched it", pointer["version"])
        else:
            pointer = promote(
                models, read_manifest(models, chosen["version"]), chosen["selected"], forecasts, decision
            )
        log.info("production is now %s (was %s)", pointer["version"], decision.get("production_version"))
        outlet_events[PRODUCTION_MODEL].extra = {"version": pointer["version"]}
        return {"version": pointer["version"], "previous": decision.get("production_version")}

    chosen = candidate()
    decision = compare(chosen)
    forecasts = publish_forecasts(chosen)
    approved(decision) >> forecasts
    switch_production(chosen, forecasts, decision)


iot_deploy()
