"""Small example apps, loadable with `voicestack serve --app voicestack.examples.NAME`."""
