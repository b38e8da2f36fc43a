"""TEST DOUBLE of TF Serving's C++ model server: not TF Serving, only its wire formats.

The real server (``tensorflow/serving`` in docker-compose) cannot run on our machines, so the
``tfserving`` backend is tested against this double, which serves the real SavedModels of a
serving dir the way the real server is configured by ``models.config``:

- it reads ``<serving_dir>/models.config`` (a ``ModelServerConfig`` text proto), maps each
  model's container ``base_path`` onto the serving dir, and loads the pinned versions with
  ``tf.saved_model.load``;
- REST (``--rest_api_port``): ``GET /v1/models/<name>[/versions/<v>]`` (model status) and
  ``POST /v1/models/<name>[/versions/<v>]:predict`` with TF Serving's ``instances`` (row) and
  ``inputs`` (columnar) request formats and ``predictions`` / ``outputs`` responses (a single
  output is returned bare), errors as ``{"error": "..."}``;
- gRPC (``--port``): ``tensorflow.serving.PredictionService`` ``Predict`` and
  ``GetModelMetadata`` (``signature_def``), with NOT_FOUND / INVALID_ARGUMENT status codes.

Custom ops, as the real server: a stock ``tensorflow/serving`` binary has no op libraries
beyond TensorFlow's, so a SavedModel calling ``Scann>...`` ops (a ScaNN retrieval index) fails
to load with TF Serving's error (``Loading servable ... failed: Not found: Op type not
registered 'Scann>...'``): its version status reads ``END`` with that error, and predict calls
get "Servable not found". ``TFServingDouble(..., custom_op_libraries=("Scann",))`` stands for a
TF Serving build with ScaNN's ops linked in (docs/serving.md): then it loads and serves them.

What it does not do: batching, version transitions with aspired-version policies, model
warmup, Classify/Regress/MultiInference, base64 ``{"b64": ...}`` strings.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves string annotations here

from serving import manifest as manifest_lib

SERVING_DEFAULT = "serving_default"


class ModelNotFoundError(KeyError):
    """No such model name or version is loaded."""


class TFServingDouble:
    """Loads what ``models.config`` names and answers predict calls (REST and gRPC)."""

    def __init__(
        self,
        serving_dir: str | Path,
        base_path_in_container: str = "/models",
        custom_op_libraries: tuple[str, ...] = (),
    ) -> None:
        """Args: custom_op_libraries: op namespaces linked into this "server binary" beyond
        TensorFlow's (``("Scann",)`` for a TF Serving build with ScaNN's ops); none by default,
        as the stock ``tensorflow/serving`` image."""
        self.serving_dir = Path(serving_dir)
        self.container_base = base_path_in_container.rstrip("/")
        self.custom_op_libraries = tuple(custom_op_libraries)
        self._models: dict[str, dict[int, Any]] = {}  # name -> version -> loaded SavedModel
        self._failed: dict[tuple[str, int], str] = {}  # (name, version) -> load error
        self._signature_defs: dict[tuple[str, int], Any] = {}
        self._rest = None
        self._grpc = None

    # --- model loading (what --model_config_file does) --------------------------------------

    def load_config(self) -> dict[str, list[int]]:
        """(Re)reads models.config and loads the pinned versions; returns name -> versions."""
        import tensorflow as tf
        from google.protobuf import text_format
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.config import model_server_config_pb2

        text = (self.serving_dir / manifest_lib.MODELS_CONFIG_FILE).read_text()
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        models: dict[str, dict[int, Any]] = {}
        failed: dict[tuple[str, int], str] = {}
        for model in config.model_config_list.config:
            if not model.base_path.startswith(self.container_base + "/"):
                raise ValueError(f"{model.name}: base_path {model.base_path} outside the mount")
            host_base = self.serving_dir / model.base_path[len(self.container_base) + 1 :]
            versions = list(model.model_version_policy.specific.versions)
            if not versions:  # the default policy: latest version
                versions = [max(int(p.name) for p in host_base.iterdir() if p.name.isdigit())]
            models[model.name] = {}
            for version in versions:
                path = host_base / str(version)
                error = self._missing_ops_error(model.name, version, path)
                if error:
                    failed[(model.name, version)] = error
                    continue
                old = self._models.get(model.name, {}).get(version)
                models[model.name][version] = old or tf.saved_model.load(str(path))
                saved = saved_model_pb2.SavedModel.FromString(
                    (path / manifest_lib.SAVED_MODEL_FILE).read_bytes()
                )
                self._signature_defs[(model.name, version)] = saved.meta_graphs[0].signature_def
        self._models = models  # one assignment: requests see the old or the new set
        self._failed = failed
        return {name: sorted(v) for name, v in models.items()}

    def _missing_ops_error(self, name: str, version: int, path: Path) -> str | None:
        """TF Serving's load error when the SavedModel uses ops this "binary" lacks; loads the
        op libraries it has (into this Python process) otherwise."""
        from serving import custom_ops

        missing = sorted(
            op
            for op in custom_ops.custom_ops_used(path)
            if op.split(">", 1)[0] not in self.custom_op_libraries
        )
        if missing:
            return (
                f"Loading servable: {{name: {name} version: {version}}} failed: Not found: Op "
                f"type not registered '{missing[0]}' in binary running on tfserving-double. "
                "Make sure the Op and Kernel are registered in the binary running in this "
                "process."
            )
        custom_ops.load_for(path)
        return None

    def _model(self, name: str, version: int | None):
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFoundError(f"Servable not found for request: Latest({name})")
        if version is None:
            version = max(versions)
        if version not in versions:
            raise ModelNotFoundError(f"Servable not found for request: Specific({name}, {version})")
        return version, versions[version]

    def predict(
        self, name: str, version: int | None, signature: str, inputs: dict[str, Any]
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Runs a signature; returns (version used, outputs). Raises ModelNotFoundError,
        ValueError (bad signature/inputs)."""
        import tensorflow as tf

        version, model = self._model(name, version)
        signature = signature or SERVING_DEFAULT
        if signature not in model.signatures:
            raise ValueError(f'Serving signature name: "{signature}" not found in signature def')
        fn = model.signatures[signature]
        specs = fn.structured_input_signature[1]
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        if unknown or missing:
            raise ValueError(f"input mismatch: missing {missing}, unexpected {unknown}")
        tensors = {}
        for key, value in inputs.items():
            array = np.asarray(value, dtype=specs[key].dtype.as_numpy_dtype)
            if not specs[key].shape.is_compatible_with(array.shape):
                raise ValueError(f"input {key}: shape {array.shape} vs {specs[key].shape}")
            tensors[key] = tf.constant(array)
        try:
            outputs = fn(**tensors)
        except tf.errors.OpError as err:
            raise ValueError(err.message) from err
        return version, {k: v.numpy() for k, v in outputs.items()}

    # --- REST --------------------------------------------------------------------------------

    def rest_app(self):
        """The FastAPI app of the REST API (TF Serving's paths and JSON formats)."""
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        app = FastAPI(title="TF Serving test double")

        def status(name: str, version: int | None):
            failed = {v: e for (n, v), e in self._failed.items() if n == name}
            if version in failed:  # what TF Serving reports for a version that failed to load
                return {
                    "model_version_status": [
                        {
                            "version": str(version),
                            "state": "END",
                            "status": {"error_code": "NOT_FOUND", "error_message": failed[version]},
                        }
                    ]
                }
            try:
                versions = (
                    [self._model(name, version)[0]] if version else sorted(self._models[name])
                )
            except (ModelNotFoundError, KeyError) as err:
                return JSONResponse({"error": str(err).strip("'\"")}, status_code=404)
            return {
                "model_version_status": [
                    {
                        "version": str(v),
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                    for v in versions
                ]
            }

        @app.get("/v1/models/{name}")
        def model_status(name: str):
            return status(name, None)

        @app.get("/v1/models/{name}/versions/{version}")
        def version_status(name: str, version: int):
            return status(name, version)

        async def predict(name: str, version: int | None, request: Request):
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "JSON Parse error: invalid body"}, status_code=400)
            try:
                return JSONResponse(await _rest_predict(name, version, body))
            except ModelNotFoundError as err:
                return JSONResponse({"error": str(err).strip("'\"")}, status_code=404)
            except (ValueError, TypeError) as err:
                return JSONResponse({"error": str(err)}, status_code=400)

        async def _rest_predict(name, version, body):
            import anyio

            signature = body.get("signature_name", SERVING_DEFAULT)
            if "inputs" in body:
                inputs, row_format = body["inputs"], False
            elif "instances" in body:
                rows, row_format = body["instances"], True
                if rows and not isinstance(rows[0], dict):
                    raise ValueError("instances: only named inputs are supported by the double")
                inputs = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
            else:
                raise ValueError("Missing 'inputs' or 'instances' key")
            if not isinstance(inputs, dict):
                raise ValueError("inputs: only named inputs are supported by the double")
            _, outputs = await anyio.to_thread.run_sync(
                self.predict, name, version, signature, inputs
            )
            lists = {k: v.tolist() for k, v in outputs.items()}
            if row_format:
                rows = [
                    dict(zip(lists, values, strict=True))
                    for values in zip(*lists.values(), strict=False)
                ]
                single = len(lists) == 1
                return {"predictions": [next(iter(r.values())) for r in rows] if single else rows}
            return {"outputs": next(iter(lists.values())) if len(lists) == 1 else lists}

        # TF Serving's verbs follow a colon: /v1/models/<name>[/versions/<v>]:predict.
        @app.post("/v1/models/{name}/versions/{version}:predict")
        async def predict_version(name: str, version: int, request: Request):
            return await predict(name, version, request)

        @app.post("/v1/models/{name}:predict")
        async def predict_latest(name: str, request: Request):
            return await predict(name, None, request)

        return app

    def start_rest(self) -> str:
        """Starts the REST endpoint on a free loopback port; returns its URL."""
        from serving.testing.http_thread import ThreadedServer

        self._rest = ThreadedServer(self.rest_app()).start()
        return self._rest.url

    # --- gRPC --------------------------------------------------------------------------------

    def start_grpc(self) -> str:
        """Starts the gRPC PredictionService on a free loopback port; returns ``host:port``."""
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Stops both endpoints (clients then get connection errors, like a dead server)."""
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None


def _servicer_base():
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceServicer


class _PredictionServicer(_servicer_base()):
    """gRPC ``PredictionService`` of the double (Predict and GetModelMetadata)."""

    def __init__(self, double: TFServingDouble) -> None:
        self._double = double

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            used, outputs = self._double.predict(spec.name, version, spec.signature_name, inputs)
        except ModelNotFoundError as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err).strip("'\""))
        except (ValueError, TypeError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        wanted = set(request.output_filter) or set(outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = used
        response.model_spec.signature_name = spec.signature_name or SERVING_DEFAULT
        for name, value in outputs.items():
            if name in wanted:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802 (gRPC method name)
        import grpc
        from tensorflow_serving.apis import get_model_metadata_pb2

        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only signature_def is supported")
        version = spec.version.value if spec.HasField("version") else None
        try:
            used, _ = self._double._model(spec.name, version)
        except ModelNotFoundError as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err).strip("'\""))
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self._double._signature_defs[(spec.name, used)].items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = used
        response.metadata["signature_def"].Pack(signature_map)
        return response
