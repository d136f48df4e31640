from genloom.cli.main import app

app(prog_name="genloom")
