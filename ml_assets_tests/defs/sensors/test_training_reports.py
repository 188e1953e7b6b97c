"""The training report sensor on real runs of a real instance: one email per training run, even when
a run that trained nothing succeeds in the same tick."""

import dagster as dg

from ml_assets.defs.sensors import reports
from ml_assets.defs.sensors.reports import training_report_on_success


@dg.op
def step() -> int:
    return 1


@dg.job(name="training_job")
def training_job():
    step()


@dg.job(name="feature_job")
def other_job():
    step()


def _tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"blob_store": object(), "email": object()})
    return training_report_on_success.evaluate_tick(context)


def test_a_training_run_and_another_run_in_one_tick_send_one_report(monkeypatch):
    sent: list[str] = []
    monkeypatch.setattr(reports, "send_cycle_report",
                        lambda instance, run_id, blob_store, email: sent.append(run_id) or "outbox/x.eml")
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None).cursor  # the first tick only sets the cursor
        trained = training_job.execute_in_process(instance=instance).run_id
        other_job.execute_in_process(instance=instance)
        other_job.execute_in_process(instance=instance)

        first = _tick(instance, cursor)
        assert sent == [trained]
        assert first.skip_message is None
        again = _tick(instance, first.cursor)
        assert sent == [trained]  # the cursor moved past every run: no second email
        assert again.cursor == first.cursor
