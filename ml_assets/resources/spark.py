"""Spark session resource that imports pyspark only when a session is first needed."""

from typing import Any, TypeAlias

import dagster as dg
from pydantic import Field, PrivateAttr

# pyspark.sql.DataFrame; spelled Any so that loading the code location never imports pyspark.
SparkDataFrame: TypeAlias = Any


class LazySparkResource(dg.ConfigurableResource):
    """dagster-pyspark's LazyPySparkResource, itself constructed lazily.

    dagster_pyspark imports pyspark at module import, which would slow down every load of the
    code location; this wrapper defers that import to the first step that uses Spark.
    """

    spark_config: dict[str, str] = Field(
        description="Spark settings, e.g. spark.master (local[*] by default, or a cluster URL)"
    )

    _delegate: Any = PrivateAttr(default=None)

    @property
    def spark_session(self):
        if self._delegate is None:
            from dagster_pyspark import LazyPySparkResource

            from ml_assets.storage.hadoop_local import local_fs_config

            # A local master writes through the no-fork local file system when a JDK can build it.
            self._delegate = LazyPySparkResource(spark_config=local_fs_config(self.spark_config))
        return self._delegate.spark_session
