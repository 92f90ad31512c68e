"""Running tfsft exports in TF Serving (deploy files: the repository's `serving/` folder).

- `ops`: the op check every export passes (TF core ops and the TF Text ops TF Serving links);
- `assets`: what an export writes beside the SavedModel for TF Serving: warm-up
  requests (`assets.extra/tf_serving_warmup_requests`) and its batching parameters;
- `models_config`: the `models.config` of an export root (`tfsft serving-config`);
- `client`: `Client("localhost:8500").predict("sst2", [...])` over gRPC or REST,
  the rows of `tfsft predict` (`tfsft predict --server HOST:PORT --model NAME`).

`ops` and `assets` are used by `tfsft.export`; `client` uses it, so this
package imports none of its modules here.
"""
