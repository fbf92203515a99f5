export default {
  files: ['dist/test/**/*.test.js'],
  timeout: '5m',
  concurrency: 2,
  workerThreads: false,
};
