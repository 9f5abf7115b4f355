package embedded

var NextTick = nextTick
