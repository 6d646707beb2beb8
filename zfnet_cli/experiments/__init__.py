"""One module per subcommand: ``run(cfg, run_dir) -> metrics``. Experiments import the core
(model, data, engine, deconv, ...) and not each other, but for ``ablate``, which is a sequence
of ``train`` runs and imports :mod:`~zfnet_cli.experiments.train` for them."""
