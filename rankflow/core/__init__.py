"""The core layer: what the pipeline steps, serving and the CLI share, importing none of them.

The layers, each importing only those below it (checked by ``make lint``; the contract is
``[tool.importlinter]`` in pyproject.toml)::

    rankflow.cli, bench   the command line and the benchmarks
    pipelines             the DAG, compile, local runs, run history, submit
    components            the pipeline steps (each on its own: no step imports another)
    serving               Triton export, scorer, local server, store, deploy, client
    rankflow.core         spec, errors, artifacts + integrity, I/O, task names, compiled
                          transform, device detection, endpoint contract, step error records

- errors: the exception tree (``RankflowError``) and each error's exit code
- spec: the dataset spec (column roles)
- integrity, artifacts, io: sealed atomic artifacts and their checked loading
- tasks: task / model-head / endpoint-output names
- compiled: the fitted NVTabular workflow as numpy lookups (the feature step's CPU transform,
  serving's hot path)
- layers: rankflow's own Keras layers (needed to build *and* to load a ranker)
- contract: the endpoint contract and the ``rankflow.json`` manifest of every exported version
- device: GPU or CPU
- steps: the structured error record a failing step leaves
- image: the one container image
"""
