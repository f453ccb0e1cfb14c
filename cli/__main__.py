from tinymvlm.cli.main import main

main()
