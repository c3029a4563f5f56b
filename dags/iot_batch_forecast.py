"""Answer a batch forecast request with the production models.

    read_request -> forecast

Started by data_listener for every new object under forecast-requests/ (a CSV ``series,date``);
the answer goes to ``forecasts/batch/<request key>/<etag>.csv`` in the data bucket.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from iot_common import CONFIG, DEFAULT_ARGS, store


@dag(
    dag_id="iot_batch_forecast",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    default_args=DEFAULT_ARGS,
    params={
        "bucket": Param(CONFIG.data_bucket, type="string"),
        "key": Param("forecast-requests/request.csv", type="string"),
        "etag": Param("", type="string"),
    },
    tags=["iot", "forecast"],
)
def iot_batch_forecast():
    @task
    def read_request(params=None):
        """The request rows, checked (a bad request fails at once, without retries)."""
        from r3e_testbed.pipeline.forecast import RequestError, parse_request

        data = store(params["bucket"])
        try:
            return parse_request(data.get(params["key"]), params["key"])
        except KeyError:
            raise AirflowFailException(f"s3://{params['bucket']}/{params['key']} does not exist") from None
        except RequestError as error:
            raise AirflowFailException(str(error)) from error

    @task
    def forecast(request, params=None) -> str:
        """Forecast every requested day with the production model of its series."""
        from r3e_testbed.pipeline.forecast import batch_forecast
        from r3e_testbed.pipeline.registry import production_models, read_production

        models = store(CONFIG.models_bucket)
        pointer = read_production(models)
        if pointer is None:
            raise AirflowFailException("no production model yet")
        answer = batch_forecast(request, production_models(models, pointer))
        data = store(params["bucket"])
        etag = params["etag"] or data.etag(params["key"]) or "current"
        key = f"forecasts/batch/{params['key']}/{etag.strip(chr(34))}.csv"
        data.put(key, answer.to_csv(index=False, float_format="%.4f").encode("utf-8"))
        return key

    forecast(read_request())


iot_batch_forecast()
