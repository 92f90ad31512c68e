"""serving/: the compose file, TF Serving configs and the load test (no Docker engine here,
so the files are checked against TF Serving's formats and each other)."""

from __future__ import annotations

import importlib.util
import json

import yaml

from tests.conftest import REPO
from tests.serving.protos import BatchingParameters, MonitoringConfig, parse

SERVING = REPO / "serving"


def test_compose_serves_the_export_root_with_batching_warmup_and_metrics():
    service = yaml.safe_load((SERVING / "docker-compose.yml").read_text())["services"]["tf-serving"]
    assert service["image"].startswith("tensorflow/serving:${TF_SERVING_VERSION:-2.")
    assert service["ports"] == ["8500:8500", "8501:8501"]
    assert any(v.endswith("}:/models:ro") for v in service["volumes"])  # ${EXPORT_ROOT:?...}
    mounts = {container: host for host, container, _ in (v.split(":") for v in service["volumes"] if v[:2] == "./")}
    flags = dict(flag.removeprefix("--").split("=", 1) for flag in service["command"])
    assert flags["model_config_file"] == "/models/models.config"  # serving-config's base paths: /models/<name>
    assert flags["enable_batching"] == flags["enable_per_model_batching_parameters"] == "true"
    assert flags["enable_model_warmup"] == flags["allow_version_labels_for_unavailable_models"] == "true"
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        assert (SERVING / mounts[flags[flag]]).exists(), flag


def test_batching_parameters_set_only_the_shared_thread_pool():
    params = parse((SERVING / "batching_parameters.txt").read_text(), BatchingParameters)
    assert params.num_batch_threads.value > 0 and params.thread_pool_name.value
    assert not params.allowed_batch_sizes and not params.HasField("max_batch_size")  # per model, from the export


def test_monitoring_config_enables_prometheus_on_the_rest_port():
    config = parse((SERVING / "monitoring.config").read_text(), MonitoringConfig)
    assert config.prometheus_config.enable and config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_loadtest_reports_latency_and_throughput(server, capsys):
    spec = importlib.util.spec_from_file_location("loadtest", SERVING / "loadtest.py")
    loadtest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loadtest)
    argv = ["--model", "sst2", "--requests", "12", "--concurrency", "3", "--batch-size", "2", "--max-seconds", "60"]
    assert loadtest.main(["--server", server.grpc_address, *argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["requests"], result["errors"], result["concurrency"], result["batch_size"]) == (12, 0, 3, 2)
    assert 0 < result["p50_ms"] <= result["p99_ms"] and abs(result["rows_per_s"] - 2 * result["requests_per_s"]) <= 0.02
    assert loadtest.main(["--server", server.rest_address, *argv]) == 0
    assert "12 requests of 2 rows (0 errors) at concurrency 3" in capsys.readouterr().out
    assert loadtest.main(["--server", server.rest_address, "--model", "nope", "--requests", "1"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
