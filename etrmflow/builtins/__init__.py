"""Built-in components. Each module is a plugin registered through the same hooks as any
third-party plugin (see ``etrmflow.plugins.BUILTIN_PLUGINS``)."""
