pytest_plugins = ["django_zinrelo.testing"]
