"""One module per subcommand: ``run(cfg, run_dir) -> metrics``. Experiments import the core
(model, data, engine, deconv, ...) and never each other."""
